// TIFF through libtiff 4.5, first directory only (PIL also opens frame 0).
//
// Layouts PIL reads sample-for-sample are decoded directly, so the pixels are exactly PIL's: contiguous
// 8-bit gray (L), gray+alpha (LA), RGB, RGBA (unassociated alpha; associated alpha is un-premultiplied
// as PIL's RGBa→RGB does), 8-bit palette (P, colormap high bytes), 8-bit CMYK (PIL's formula on
// convert), 16-bit gray (I;16, clipped on convert). Everything else (YCbCr/JPEG-in-TIFF, planar, 1/2/4-bit, 16-bit colour, float) goes
// through libtiff's TIFFRGBAImage, which may differ from PIL by rounding. The TIFF Orientation tag is
// what PIL's getexif reads for TIFF, so the decode keeps file order and reports the tag.
#include <tiffio.h>

#include <cstdarg>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

thread_local std::string t_tiff_error;

void tiff_error_handler(const char* module, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  if (t_tiff_error.empty()) t_tiff_error = module ? std::string(module) + ": " + buf : buf;
}
void tiff_warning_handler(const char*, const char*, va_list) {}

struct MemFile {
  const uint8_t* data;
  toff_t size;
  toff_t pos;
};

tmsize_t mem_read(thandle_t h, void* buf, tmsize_t n) {
  auto* f = static_cast<MemFile*>(h);
  if (n < 0 || f->pos >= f->size) return 0;
  const toff_t k = std::min<toff_t>(static_cast<toff_t>(n), f->size - f->pos);
  std::memcpy(buf, f->data + f->pos, k);
  f->pos += k;
  return static_cast<tmsize_t>(k);
}
tmsize_t mem_write(thandle_t, void*, tmsize_t) { return -1; }
toff_t mem_seek(thandle_t h, toff_t off, int whence) {
  auto* f = static_cast<MemFile*>(h);
  toff_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f->pos : f->size;
  f->pos = base + off;
  return f->pos;
}
int mem_close(thandle_t) { return 0; }
toff_t mem_size(thandle_t h) { return static_cast<MemFile*>(h)->size; }
int mem_map(thandle_t, void**, toff_t*) { return 0; }
void mem_unmap(thandle_t, void*, toff_t) {}

struct TiffCloser {
  void operator()(TIFF* t) const { TIFFClose(t); }
};

[[noreturn]] void tiff_fail(const DecodeContext& ctx, const char* what) {
  throw_error(ErrorKind::kFormat, "{}: {}: {}", ctx.name, what, t_tiff_error.empty() ? "libtiff error" : t_tiff_error);
}

// Reads every sample of a contiguous (chunky) image into `out` (rows packed, bpp bytes per pixel).
void read_contig(TIFF* t, const DecodeContext& ctx, Image& out, int bpp) {
  const int w = out.width(), h = out.height();
  const size_t row = static_cast<size_t>(w) * bpp;
  if (TIFFIsTiled(t)) {
    uint32_t tw = 0, th = 0;
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
    if (tw == 0 || th == 0 || tw > (1u << 16) || th > (1u << 16)) tiff_fail(ctx, "invalid tile size");
    const tmsize_t tile_bytes = TIFFTileSize(t);
    if (tile_bytes < static_cast<tmsize_t>(size_t(tw) * th * bpp)) tiff_fail(ctx, "tile size disagrees with layout");
    std::vector<uint8_t> tile(static_cast<size_t>(tile_bytes));
    for (uint32_t ty = 0; ty < uint32_t(h); ty += th)
      for (uint32_t tx = 0; tx < uint32_t(w); tx += tw) {
        if (TIFFReadTile(t, tile.data(), tx, ty, 0, 0) < 0) tiff_fail(ctx, "tile read failed");
        const uint32_t cw = std::min<uint32_t>(tw, w - tx), ch = std::min<uint32_t>(th, h - ty);
        for (uint32_t y = 0; y < ch; ++y)
          std::memcpy(out.row(static_cast<int>(ty + y)) + size_t(tx) * bpp, tile.data() + size_t(y) * tw * bpp,
                      size_t(cw) * bpp);
      }
    return;
  }
  if (TIFFScanlineSize(t) < static_cast<tmsize_t>(row)) tiff_fail(ctx, "scanline size disagrees with layout");
  std::vector<uint8_t> line(static_cast<size_t>(TIFFScanlineSize(t)));
  for (int y = 0; y < h; ++y) {
    if (TIFFReadScanline(t, line.data(), static_cast<uint32_t>(y), 0) < 0) tiff_fail(ctx, "scanline read failed");
    std::memcpy(out.row(y), line.data(), row);
  }
}

}  // namespace

RawImage decode_tiff(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  static const bool handlers_set = [] {
    TIFFSetErrorHandler(tiff_error_handler);
    TIFFSetWarningHandler(tiff_warning_handler);
    return true;
  }();
  (void)handlers_set;
  t_tiff_error.clear();
  MemFile mf{bytes.data(), static_cast<toff_t>(bytes.size()), 0};
  // "rm": read-only, no memory mapping.
  std::unique_ptr<TIFF, TiffCloser> tif(TIFFClientOpen(std::string(ctx.name).c_str(), "rm", &mf, mem_read, mem_write,
                                                        mem_seek, mem_close, mem_size, mem_map, mem_unmap));
  if (!tif) tiff_fail(ctx, "corrupt TIFF header");
  TIFF* t = tif.get();
  uint32_t w = 0, h = 0;
  TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
  check_dimensions(ctx, w, h);

  uint16_t bits = 1, spp = 1, photometric = 0, planar = PLANARCONFIG_CONTIG, sample_format = SAMPLEFORMAT_UINT;
  uint16_t orientation = 0;
  TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &sample_format);
  if (!TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &photometric)) photometric = spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK;
  TIFFGetField(t, TIFFTAG_ORIENTATION, &orientation);  // absent → 0 (PIL: no orientation)
  uint16_t n_extra = 0;
  uint16_t* extra = nullptr;
  TIFFGetField(t, TIFFTAG_EXTRASAMPLES, &n_extra, &extra);
  const bool assoc_alpha = n_extra >= 1 && extra && extra[0] == EXTRASAMPLE_ASSOCALPHA;

  RawImage raw;
  raw.orientation_tag = orientation;
  const bool contig8 = planar == PLANARCONFIG_CONTIG && bits == 8 && sample_format == SAMPLEFORMAT_UINT;
  bool direct = true;
  if (contig8 && photometric == PHOTOMETRIC_MINISBLACK && spp == 1) raw.mode = RawMode::kL;
  else if (contig8 && photometric == PHOTOMETRIC_MINISBLACK && spp == 2) raw.mode = RawMode::kLA;
  else if (contig8 && photometric == PHOTOMETRIC_RGB && spp == 3) raw.mode = RawMode::kRGB;
  else if (contig8 && photometric == PHOTOMETRIC_RGB && spp == 4) raw.mode = RawMode::kRGBA;
  else if (contig8 && photometric == PHOTOMETRIC_PALETTE && spp == 1) raw.mode = RawMode::kP;
  else if (contig8 && photometric == PHOTOMETRIC_SEPARATED && spp == 4) raw.mode = RawMode::kCMYK;
  else if (planar == PLANARCONFIG_CONTIG && bits == 16 && sample_format == SAMPLEFORMAT_UINT &&
           photometric == PHOTOMETRIC_MINISBLACK && spp == 1)
    raw.mode = RawMode::kI16;
  else direct = false;

  if (direct) {
    raw.pixels = Image(static_cast<int>(w), static_cast<int>(h), raw_mode_bytes(raw.mode));
    read_contig(t, ctx, raw.pixels, raw_mode_bytes(raw.mode));
    if (raw.mode == RawMode::kP) {
      init_gray_palette(raw);
      uint16_t *r = nullptr, *g = nullptr, *b = nullptr;
      if (!TIFFGetField(t, TIFFTAG_COLORMAP, &r, &g, &b)) tiff_fail(ctx, "palette TIFF has no ColorMap");
      for (int i = 0; i < 256; ++i) {  // PIL keeps the high byte of each 16-bit entry
        raw.palette[i * 3] = static_cast<uint8_t>(r[i] >> 8);
        raw.palette[i * 3 + 1] = static_cast<uint8_t>(g[i] >> 8);
        raw.palette[i * 3 + 2] = static_cast<uint8_t>(b[i] >> 8);
      }
    }
    if (raw.mode == RawMode::kRGBA && assoc_alpha) {  // PIL "RGBa" → unpremultiply (Convert.c rgbA2rgba)
      uint8_t* p = raw.pixels.data();
      for (size_t i = 0, n = size_t(w) * h; i < n; ++i, p += 4) {
        const int a = p[3];
        if (a == 0 || a == 255) continue;
        for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(std::min(255, 255 * p[c] / a));
      }
    }
    return raw;
  }

  // Fallback: libtiff's RGBA conversion, in file row order (req_orientation = the file's own, so
  // libtiff flips nothing; the orientation step applies the tag like PIL does).
  char emsg[1024] = {0};
  if (!TIFFRGBAImageOK(t, emsg))
    throw_error(ErrorKind::kUnsupported, "{}: TIFF layout not supported (photometric {}, {} bits, {} samples): {}",
                ctx.name, photometric, bits, spp, emsg);
  TIFFRGBAImage img;
  if (!TIFFRGBAImageBegin(&img, t, 0, emsg)) throw_error(ErrorKind::kFormat, "{}: TIFF: {}", ctx.name, emsg);
  img.req_orientation = img.orientation;
  std::vector<uint32_t> rgba(size_t(w) * h);
  const int ok = TIFFRGBAImageGet(&img, rgba.data(), w, h);
  TIFFRGBAImageEnd(&img);
  if (!ok) tiff_fail(ctx, "TIFF decode failed");
  const bool has_alpha = n_extra >= 1;
  raw.mode = has_alpha ? RawMode::kRGBA : RawMode::kRGB;
  if (photometric == PHOTOMETRIC_SEPARATED) raw.mode = RawMode::kRGB;  // CMYK converted by libtiff
  raw.pixels = Image(static_cast<int>(w), static_cast<int>(h), raw_mode_bytes(raw.mode));
  const int c = raw.pixels.channels();
  for (uint32_t y = 0; y < h; ++y) {
    uint8_t* d = raw.pixels.row(static_cast<int>(y));
    const uint32_t* s = rgba.data() + size_t(y) * w;
    for (uint32_t x = 0; x < w; ++x, d += c) {
      d[0] = TIFFGetR(s[x]);
      d[1] = TIFFGetG(s[x]);
      d[2] = TIFFGetB(s[x]);
      if (c == 4) d[3] = TIFFGetA(s[x]);
    }
  }
  return raw;
}

}  // namespace vlm::image_detail
