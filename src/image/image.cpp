// Format dispatch, EXIF orientation and PIL-exact conversion to RGB/RGBA (see image.h).
//
// Conversion formulas are PIL 9.4's Convert.c: L/LA/RGBA → RGB copy or drop channels (alpha is never
// composited), P → palette lookup, I (16-bit gray) → clip to 255, CMYK → nk - muldiv255(c, nk) with
// nk = 255 - k. Orientation follows ImageOps.exif_transpose's table of Image.transpose methods.
#include "image/image.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "image/codecs.h"

namespace vlm {

Image::Image(int width, int height, int channels) : width_(width), height_(height), channels_(channels) {
  const size_t bytes = static_cast<size_t>(width) * height * channels;
  buf_ = make_host_buffer(bytes == 0 ? 1 : bytes, MemCategory::kImage);
}

Image Image::clone() const {
  Image out(width_, height_, channels_);
  if (size_bytes()) std::memcpy(out.data(), data(), size_bytes());
  return out;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::kJpeg: return "JPEG";
    case ImageFormat::kPng: return "PNG";
    case ImageFormat::kWebp: return "WebP";
    case ImageFormat::kHeif: return "HEIF";
    case ImageFormat::kAvif: return "AVIF";
    case ImageFormat::kTiff: return "TIFF";
    case ImageFormat::kGif: return "GIF";
    case ImageFormat::kUnknown: break;
  }
  return "unknown";
}

ImageFormat sniff_image_format(std::span<const uint8_t> h) {
  auto starts = [&](const char* magic, size_t n, size_t at = 0) {
    return h.size() >= at + n && std::memcmp(h.data() + at, magic, n) == 0;
  };
  if (starts("\xFF\xD8\xFF", 3)) return ImageFormat::kJpeg;
  if (starts("\x89PNG\r\n\x1A\n", 8)) return ImageFormat::kPng;
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return ImageFormat::kWebp;
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return ImageFormat::kGif;
  if (starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4))
    return ImageFormat::kTiff;
  // ISO-BMFF: [size]"ftyp"<major brand>; the brand says HEIF or AVIF. Compatible brands are also
  // scanned so that e.g. a "mif1" major brand with "heic" compatibility is recognised.
  if (starts("ftyp", 4, 4) && h.size() >= 12) {
    uint32_t box = (uint32_t(h[0]) << 24) | (uint32_t(h[1]) << 16) | (uint32_t(h[2]) << 8) | h[3];
    size_t end = std::min<size_t>(h.size(), box < 16 ? 16 : box);
    bool heif = false, avif = false;
    for (size_t at = 8; at + 4 <= end; at += 4) {
      if (at == 12) continue;  // minor version
      std::string_view b(reinterpret_cast<const char*>(h.data() + at), 4);
      if (b == "avif" || b == "avis") avif = true;
      if (b == "heic" || b == "heix" || b == "hevc" || b == "hevx" || b == "heim" || b == "heis" ||
          b == "mif1" || b == "msf1")
        heif = true;
    }
    std::string_view major(reinterpret_cast<const char*>(h.data() + 8), 4);
    if (major == "avif" || major == "avis") return ImageFormat::kAvif;
    if (avif && !(major == "heic" || major == "heix")) return ImageFormat::kAvif;
    if (heif) return ImageFormat::kHeif;
  }
  return ImageFormat::kUnknown;
}

// ---- EXIF Orientation ------------------------------------------------------------------------------

int exif_orientation_from_blob(std::span<const uint8_t> b) {
  if (b.size() >= 6 && std::memcmp(b.data(), "Exif\0\0", 6) == 0) b = b.subspan(6);
  if (b.size() < 8) return 0;
  bool le;
  if (b[0] == 'I' && b[1] == 'I') le = true;
  else if (b[0] == 'M' && b[1] == 'M') le = false;
  else return 0;
  auto u16 = [&](size_t at) -> uint32_t {
    return le ? (b[at] | (b[at + 1] << 8)) : ((b[at] << 8) | b[at + 1]);
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return le ? (uint32_t(b[at]) | (uint32_t(b[at + 1]) << 8) | (uint32_t(b[at + 2]) << 16) |
                 (uint32_t(b[at + 3]) << 24))
              : ((uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) |
                 uint32_t(b[at + 3]));
  };
  if (u16(2) != 42) return 0;
  const size_t ifd = u32(4);
  if (ifd + 2 > b.size()) return 0;
  const uint32_t n = u16(ifd);
  for (uint32_t i = 0; i < n; ++i) {
    const size_t e = ifd + 2 + size_t(i) * 12;
    if (e + 12 > b.size()) return 0;
    if (u16(e) != 0x0112) continue;
    const uint32_t type = u16(e + 2);
    if (type == 3) return static_cast<int>(u16(e + 8));   // SHORT, stored inline
    if (type == 4) return static_cast<int>(u32(e + 8));   // LONG (non-standard but PIL reads it)
    if (type == 1 || type == 7) return b[e + 8];          // BYTE / UNDEFINED
    return 0;
  }
  return 0;
}

Image apply_exif_orientation(const Image& src, int o) {
  if (o < 2 || o > 8) return src.clone();
  const int w = src.width(), h = src.height(), c = src.channels();
  const bool swap = o >= 5;  // TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90 swap the axes
  Image out(swap ? h : w, swap ? w : h, c);
  const int ow = out.width(), oh = out.height();
  for (int y = 0; y < oh; ++y) {
    uint8_t* dst = out.row(y);
    for (int x = 0; x < ow; ++x) {
      int sx, sy;
      switch (o) {
        case 2: sx = w - 1 - x; sy = y; break;          // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;  // ROTATE_180
        case 4: sx = x; sy = h - 1 - y; break;          // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = h - 1 - x; break;          // ROTATE_270 (90° clockwise)
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;  // TRANSVERSE
        default: sx = w - 1 - y; sy = x; break;         // 8: ROTATE_90 (90° counter-clockwise)
      }
      std::memcpy(dst + size_t(x) * c, src.row(sy) + size_t(sx) * c, c);
    }
  }
  return out;
}

namespace image_detail {

const char* raw_mode_name(RawMode m) {
  switch (m) {
    case RawMode::kBilevel: return "1";
    case RawMode::kL: return "L";
    case RawMode::kLA: return "LA";
    case RawMode::kP: return "P";
    case RawMode::kRGB: return "RGB";
    case RawMode::kRGBA: return "RGBA";
    case RawMode::kCMYK: return "CMYK";
    case RawMode::kI16: return "I";
  }
  return "?";
}

int raw_mode_bytes(RawMode m) {
  switch (m) {
    case RawMode::kBilevel:
    case RawMode::kL:
    case RawMode::kP: return 1;
    case RawMode::kLA:
    case RawMode::kI16: return 2;
    case RawMode::kRGB: return 3;
    case RawMode::kRGBA:
    case RawMode::kCMYK: return 4;
  }
  return 0;
}

void check_dimensions(const DecodeContext& ctx, int64_t width, int64_t height) {
  VLM_CHECK(width > 0 && height > 0, ErrorKind::kFormat, "{}: {} image has a zero or negative size {}x{}",
            ctx.name, image_format_name(ctx.format), width, height);
  // Image is indexed with int; libraries cap far below this anyway.
  VLM_CHECK(width < (1 << 30) && height < (1 << 30), ErrorKind::kResource, "{}: {} image size {}x{} is too large",
            ctx.name, image_format_name(ctx.format), width, height);
  const int64_t pixels = width * height;
  if (ctx.opts.max_pixels > 0 && pixels > ctx.opts.max_pixels)
    throw_error(ErrorKind::kResource,
                "{}: {} image is {}x{} = {} pixels, above the limit of {} (a possible decompression bomb; "
                "raise the pixel limit to load it)",
                ctx.name, image_format_name(ctx.format), width, height, pixels, ctx.opts.max_pixels);
}

void init_gray_palette(RawImage& raw) {
  for (int i = 0; i < 256; ++i) {
    raw.palette[i * 3] = raw.palette[i * 3 + 1] = raw.palette[i * 3 + 2] = static_cast<uint8_t>(i);
    raw.palette_alpha[i] = 255;
  }
}

namespace {

// PIL's MULDIV255: a*b/255 rounded, in integers.
inline uint8_t muldiv255(int a, int b) {
  const int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

// PIL convert("RGB") / convert("RGBA") of a decoded raw image. out_c is 3 or 4.
Image convert_raw(const RawImage& raw, int out_c) {
  const Image& in = raw.pixels;
  Image out(in.width(), in.height(), out_c);
  const int w = in.width();
  for (int y = 0; y < in.height(); ++y) {
    const uint8_t* s = in.row(y);
    uint8_t* d = out.row(y);
    for (int x = 0; x < w; ++x, d += out_c) {
      uint8_t r, g, b, a = 255;
      switch (raw.mode) {
        case RawMode::kBilevel:
        case RawMode::kL: r = g = b = s[x]; break;
        case RawMode::kLA: r = g = b = s[2 * x]; a = s[2 * x + 1]; break;
        case RawMode::kP: {
          const int i = s[x];
          r = raw.palette[i * 3]; g = raw.palette[i * 3 + 1]; b = raw.palette[i * 3 + 2];
          a = raw.palette_alpha[i];
          break;
        }
        case RawMode::kRGB: r = s[3 * x]; g = s[3 * x + 1]; b = s[3 * x + 2]; break;
        case RawMode::kRGBA: r = s[4 * x]; g = s[4 * x + 1]; b = s[4 * x + 2]; a = s[4 * x + 3]; break;
        case RawMode::kCMYK: {
          const int nk = 255 - s[4 * x + 3];
          r = static_cast<uint8_t>(nk - muldiv255(s[4 * x], nk));
          g = static_cast<uint8_t>(nk - muldiv255(s[4 * x + 1], nk));
          b = static_cast<uint8_t>(nk - muldiv255(s[4 * x + 2], nk));
          break;
        }
        case RawMode::kI16: {
          uint16_t v;
          std::memcpy(&v, s + 2 * x, 2);
          r = g = b = static_cast<uint8_t>(v > 255 ? 255 : v);  // PIL i2rgb clips, it does not scale
          break;
        }
        default: r = g = b = 0;
      }
      d[0] = r; d[1] = g; d[2] = b;
      if (out_c == 4) d[3] = a;
    }
  }
  return out;
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    throw_error(ErrorKind::kNotFound, "{}: image file not found", path);
  VLM_CHECK(!std::filesystem::is_directory(status), ErrorKind::kIo, "{}: is a directory, not an image file", path);
  std::ifstream f(path, std::ios::binary);
  VLM_CHECK(f.good(), ErrorKind::kIo, "{}: cannot open image file for reading", path);
  f.seekg(0, std::ios::end);
  const auto size = f.tellg();
  VLM_CHECK(size >= 0, ErrorKind::kIo, "{}: cannot determine the file size", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  f.seekg(0);
  if (size > 0) f.read(reinterpret_cast<char*>(bytes.data()), size);
  VLM_CHECK(size == 0 || f.good(), ErrorKind::kIo, "{}: read failed after {} of {} bytes", path,
            static_cast<int64_t>(f.gcount()), static_cast<int64_t>(size));
  return bytes;
}

}  // namespace
}  // namespace image_detail

using namespace image_detail;

DecodedImage decode_image_bytes(std::span<const uint8_t> bytes, std::string_view name, const DecodeOptions& opts) {
  VLM_CHECK(!bytes.empty(), ErrorKind::kFormat, "{}: image file is empty (0 bytes)", name);
  const ImageFormat fmt = sniff_image_format(bytes);
  if (fmt == ImageFormat::kUnknown) {
    std::string hex;
    for (size_t i = 0; i < std::min<size_t>(bytes.size(), 8); ++i) hex += fmt::format("{:02x}", bytes[i]);
    throw_error(ErrorKind::kUnsupported,
                "{}: unrecognised image format (first bytes {}); supported: JPEG, PNG, WebP, HEIC/HEIF, AVIF, TIFF, "
                "GIF",
                name, hex);
  }
  DecodeContext ctx{name, opts, fmt};
  RawImage raw;
  switch (fmt) {
    case ImageFormat::kJpeg: raw = decode_jpeg(bytes, ctx); break;
    case ImageFormat::kPng: raw = decode_png(bytes, ctx); break;
    case ImageFormat::kWebp: raw = decode_webp(bytes, ctx); break;
    case ImageFormat::kHeif:
    case ImageFormat::kAvif: raw = decode_heif(bytes, ctx); break;
    case ImageFormat::kTiff: raw = decode_tiff(bytes, ctx); break;
    case ImageFormat::kGif: raw = decode_gif(bytes, ctx); break;
    case ImageFormat::kUnknown: break;
  }
  DecodedImage out;
  out.format = fmt;
  out.source_mode = raw_mode_name(raw.mode);
  out.file_width = raw.pixels.width();
  out.file_height = raw.pixels.height();
  // PIL's Image.getexif: EXIF IFD0 first; the XMP/TIFF-tag orientation only when EXIF has none.
  int o = raw.exif.empty() ? 0 : exif_orientation_from_blob(raw.exif);
  if (o == 0) o = raw.orientation_tag;
  out.exif_orientation = (o >= 1 && o <= 8) ? o : 1;
  const int out_c = opts.output == ColorOutput::kRgba ? 4 : 3;
  // RGB → RGB and RGBA → RGBA are identities: the decoder's buffer is taken as is, sparing a serial copy of
  // the whole image (36 MB for a 12 MP photo) into freshly faulted pages.
  const bool identity = (raw.mode == RawMode::kRGB && out_c == 3) || (raw.mode == RawMode::kRGBA && out_c == 4);
  Image rgb = identity ? std::move(raw.pixels) : convert_raw(raw, out_c);
  raw.pixels = Image();
  if (opts.apply_exif_orientation && !raw.orientation_by_codec && out.exif_orientation > 1) {
    out.image = apply_exif_orientation(rgb, out.exif_orientation);
    out.orientation_applied = true;
  } else {
    out.image = std::move(rgb);
  }
  return out;
}

DecodedImage decode_image_file(const std::string& path, const DecodeOptions& opts) {
  std::vector<uint8_t> bytes = read_whole_file(path);
  return decode_image_bytes(bytes, path, opts);
}

}  // namespace vlm
