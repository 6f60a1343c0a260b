// PNG through libpng 1.6, keeping PIL 9.4's modes: gray 1-bit → "1", gray 2/4/8 → L (libpng's bit
// replication equals PIL's L;2/L;4 scaling), 16-bit gray → I (PIL clips it to 255 on convert), 16-bit
// gray+alpha/RGB/RGBA → high byte (PIL's ;16B unpackers), palette → P with tRNS as palette alpha.
// No gamma, sRGB or ICC transform is applied: PIL applies none either.
// Orientation sources are those Image.getexif sees before IDAT: eXIf, the ImageMagick "Raw profile
// type exif" text chunk, then XMP's tiff:Orientation.
//
// libpng reports errors by longjmp; each setjmp frame below holds only trivially destructible locals.
#include <png.h>

#include <bit>
#include <csetjmp>
#include <cstring>
#include <regex>
#include <string>

#include "core/error.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

struct PngIo {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char error[256];
};

void png_read_cb(png_structp p, png_bytep out, size_t n) {
  auto* io = static_cast<PngIo*>(png_get_io_ptr(p));
  if (n > io->size - io->pos) png_error(p, "file is truncated (unexpected end of data)");
  std::memcpy(out, io->data + io->pos, n);
  io->pos += n;
}
void png_error_cb(png_structp p, png_const_charp msg) {
  auto* io = static_cast<PngIo*>(png_get_error_ptr(p));
  std::snprintf(io->error, sizeof(io->error), "%s", msg);
  png_longjmp(p, 1);
}
void png_warning_cb(png_structp, png_const_charp) {}

struct PngHeader {
  png_uint_32 width, height;
  int bit_depth, color_type, interlace;
};

// Phase 1: signature, chunks up to IDAT, header. Returns false after a libpng error.
bool png_phase_header(png_structp png, png_infop info, PngHeader* h) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  png_get_IHDR(png, info, &h->width, &h->height, &h->bit_depth, &h->color_type, &h->interlace, nullptr, nullptr);
  return true;
}

// Phase 2: set transforms and decode every row into `rows`.
bool png_phase_pixels(png_structp png, png_infop info, const PngHeader* h, bool keep16, png_bytep* rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  if (h->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_packing(png);  // one index per byte
  } else if (h->color_type == PNG_COLOR_TYPE_GRAY && h->bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);
  }
  if (h->bit_depth == 16) {
    if (keep16) {
      if constexpr (std::endian::native == std::endian::little) png_set_swap(png);  // native uint16
    } else {
      png_set_strip_16(png);  // keeps the high byte
    }
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  png_read_image(png, rows);
  return true;
}

struct PngGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngGuard() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

std::vector<uint8_t> hex_profile_to_bytes(const std::string& text) {
  // ImageMagick's "Raw profile type exif": "\nexif\n    <len>\n<hex lines>". PIL drops the first
  // three lines and decodes the rest as hex.
  size_t at = 0;
  for (int i = 0; i < 3 && at != std::string::npos; ++i) at = text.find('\n', at == 0 && i == 0 ? 0 : at + 1);
  if (at == std::string::npos) return {};
  std::vector<uint8_t> out;
  int nibble = -1;
  for (size_t i = at + 1; i < text.size(); ++i) {
    const char c = text[i];
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else continue;
    if (nibble < 0) nibble = v;
    else { out.push_back(static_cast<uint8_t>(nibble * 16 + v)); nibble = -1; }
  }
  return out;
}

}  // namespace

RawImage decode_png(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  PngIo io{bytes.data(), bytes.size(), 0, {0}};
  PngGuard g;
  g.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &io, png_error_cb, png_warning_cb);
  VLM_CHECK(g.png, ErrorKind::kResource, "{}: png_create_read_struct failed", ctx.name);
  g.info = png_create_info_struct(g.png);
  VLM_CHECK(g.info, ErrorKind::kResource, "{}: png_create_info_struct failed", ctx.name);
  png_set_read_fn(g.png, &io, png_read_cb);
  // Our own pixel limit is the guard; libpng's default 1e6 x 1e6 cap stays as a backstop.
  PngHeader h{};
  if (!png_phase_header(g.png, g.info, &h))
    throw_error(ErrorKind::kFormat, "{}: corrupt PNG header: {}", ctx.name, io.error);
  check_dimensions(ctx, h.width, h.height);

  RawImage raw;
  switch (h.color_type) {
    case PNG_COLOR_TYPE_GRAY:
      raw.mode = h.bit_depth == 16 ? RawMode::kI16 : (h.bit_depth == 1 ? RawMode::kBilevel : RawMode::kL);
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: raw.mode = RawMode::kLA; break;
    case PNG_COLOR_TYPE_PALETTE: raw.mode = RawMode::kP; break;
    case PNG_COLOR_TYPE_RGB: raw.mode = RawMode::kRGB; break;
    case PNG_COLOR_TYPE_RGB_ALPHA: raw.mode = RawMode::kRGBA; break;
    default: throw_error(ErrorKind::kFormat, "{}: PNG color type {} is invalid", ctx.name, h.color_type);
  }
  if (raw.mode == RawMode::kP) {
    init_gray_palette(raw);
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(g.png, g.info, &plte, &n) & PNG_INFO_PLTE) {
      for (int i = 0; i < n && i < 256; ++i) {
        raw.palette[i * 3] = plte[i].red;
        raw.palette[i * 3 + 1] = plte[i].green;
        raw.palette[i * 3 + 2] = plte[i].blue;
      }
    }
    png_bytep trans = nullptr;
    int ntrans = 0;
    if (png_get_tRNS(g.png, g.info, &trans, &ntrans, nullptr) & PNG_INFO_tRNS)
      for (int i = 0; i < ntrans && i < 256; ++i) raw.palette_alpha[i] = trans[i];
  }

  // Orientation sources (chunks before IDAT only, like PIL's getexif before load).
  png_bytep exif = nullptr;
  png_uint_32 exif_len = 0;
  if (png_get_eXIf_1(g.png, g.info, &exif_len, &exif) && exif && exif_len) raw.exif.assign(exif, exif + exif_len);
  png_textp texts = nullptr;
  int ntext = 0;
  png_get_text(g.png, g.info, &texts, &ntext);
  for (int i = 0; i < ntext; ++i) {
    const std::string key = texts[i].key ? texts[i].key : "";
    const std::string value = texts[i].text ? std::string(texts[i].text, texts[i].text_length ? texts[i].text_length
                                                                                               : texts[i].itxt_length)
                                            : "";
    if (raw.exif.empty() && key == "Raw profile type exif") raw.exif = hex_profile_to_bytes(value);
    if (key == "XML:com.adobe.xmp") {
      static const std::regex re(R"(tiff:Orientation(="|>)([0-9]))");
      std::smatch m;
      if (std::regex_search(value, m, re)) raw.orientation_tag = m[2].str()[0] - '0';
    }
  }

  raw.pixels = Image(static_cast<int>(h.width), static_cast<int>(h.height), raw_mode_bytes(raw.mode));
  std::vector<png_bytep> rows(h.height);
  for (png_uint_32 y = 0; y < h.height; ++y) rows[y] = raw.pixels.row(static_cast<int>(y));
  if (!png_phase_pixels(g.png, g.info, &h, raw.mode == RawMode::kI16, rows.data()))
    throw_error(ErrorKind::kFormat, "{}: PNG decode failed ({}x{}): {}", ctx.name, h.width, h.height, io.error);
  return raw;
}

}  // namespace vlm::image_detail
