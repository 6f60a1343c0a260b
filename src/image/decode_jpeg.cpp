// JPEG through TurboJPEG 2.1 with default flags (ISLOW IDCT, fancy upsampling): the same pixels PIL 9.4
// produces (dependencies.md §1). PIL opens 1-component files as L, 3 as RGB, 4 as CMYK with Adobe's
// inverted convention ("CMYK;I"), so 4-component pixels are inverted here before convert_to_rgb.
// The EXIF blob is the first APP1 "Exif\0\0" segment, as PIL's JpegImagePlugin keeps the first one.
//
// Large baseline colour JPEGs (photos) decode in row bands on the thread pool through libjpeg's own API
// (the library TurboJPEG wraps, same settings): band i skips to its first row with jpeg_skip_scanlines, which
// entropy-decodes the rows above but skips their IDCT, upsampling and colour conversion, then decodes its rows.
// The Huffman stream is serial, so the skips bound the gain (~2x on a 12 MP photo); the pixels are the same
// bytes tjDecompress2 writes. Any warning or error in a band, and every other kind of file, takes the
// TurboJPEG path, which keeps its error semantics.
#include <cstddef>
#include <cstdio>  // jpeglib.h needs size_t and FILE declared first
// clang-format off
#include <jpeglib.h>
// clang-format on
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

struct TjCloser {
  void operator()(void* h) const { tjDestroy(h); }
};

// Walks markers from SOI up to SOS and returns the first APP1 Exif payload.
std::vector<uint8_t> find_jpeg_exif(std::span<const uint8_t> b) {
  size_t at = 2;
  while (at + 4 <= b.size()) {
    if (b[at] != 0xFF) return {};
    const uint8_t marker = b[at + 1];
    if (marker == 0xFF) { ++at; continue; }  // fill byte
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) { at += 2; continue; }
    if (marker == 0xDA || marker == 0xD9) return {};  // start of scan / end: no more headers
    const size_t len = (size_t(b[at + 2]) << 8) | b[at + 3];
    if (len < 2 || at + 2 + len > b.size()) return {};
    if (marker == 0xE1 && len >= 8 && std::memcmp(b.data() + at + 4, "Exif\0\0", 6) == 0)
      return std::vector<uint8_t>(b.begin() + at + 4, b.begin() + at + 2 + len);
    at += 2 + len;
  }
  return {};
}

// libjpeg error manager for a band: errors longjmp out, warnings are recorded; nothing is printed.
struct BandError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  bool warned = false;
};
void band_error_exit(j_common_ptr ci) { std::longjmp(reinterpret_cast<BandError*>(ci->err)->jump, 1); }
void band_emit_message(j_common_ptr ci, int level) {
  if (level < 0) reinterpret_cast<BandError*>(ci->err)->warned = true;
}
void band_output_message(j_common_ptr) {}

// Opens a decompressor on `bytes` with tjDecompress2's settings for TJPF_RGB (ISLOW IDCT, fancy upsampling)
// and reads the header. Only C objects live between setjmp and longjmp.
void open_band(jpeg_decompress_struct& ci, BandError& err, std::span<const uint8_t> bytes) {
  ci.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = band_error_exit;
  err.pub.emit_message = band_emit_message;
  err.pub.output_message = band_output_message;
  jpeg_create_decompress(&ci);
  jpeg_mem_src(&ci, const_cast<unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&ci, TRUE);
  ci.out_color_space = JCS_EXT_RGB;
  ci.dct_method = JDCT_ISLOW;
  ci.do_fancy_upsampling = TRUE;
}

// Rows [y0, y1) of the image into `out` ([height, width, 3] u8); false on any error or warning.
bool decode_band(std::span<const uint8_t> bytes, int y0, int y1, Image& out) {
  jpeg_decompress_struct ci;
  BandError err;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&ci);
    return false;
  }
  open_band(ci, err, bytes);
  jpeg_start_decompress(&ci);
  if (y0 > 0 && jpeg_skip_scanlines(&ci, static_cast<JDIMENSION>(y0)) != static_cast<JDIMENSION>(y0)) err.warned = true;
  while (!err.warned && static_cast<int>(ci.output_scanline) < y1) {
    JSAMPROW row = out.row(static_cast<int>(ci.output_scanline));
    if (jpeg_read_scanlines(&ci, &row, 1) != 1) err.warned = true;
  }
  // The last band reads on to EOI as tjDecompress2 does (jpeg_finish_decompress), so that a warning met there
  // also sends the file to the TurboJPEG path.
  if (!err.warned && ci.output_scanline == ci.output_height)
    jpeg_finish_decompress(&ci);
  else
    jpeg_abort_decompress(&ci);
  jpeg_destroy_decompress(&ci);
  return !err.warned;
}

// The banded decode of a baseline YCbCr JPEG of at least kMinBandedPixels on a pool of 4+ threads; empty
// when the file is not one (or any band failed), and the caller decodes it with TurboJPEG.
constexpr int64_t kMinBandedPixels = 2'000'000;
Image decode_banded(std::span<const uint8_t> bytes, int width, int height) {
  ThreadPool& pool = ThreadPool::global();
  if (pool.num_threads() < 4 || int64_t(width) * height < kMinBandedPixels) return {};
  int mcu_rows = 0;
  {
    jpeg_decompress_struct ci;
    BandError err;
    if (setjmp(err.jump)) {
      jpeg_destroy_decompress(&ci);
      return {};
    }
    open_band(ci, err, bytes);
    const bool fits = !ci.progressive_mode && !ci.arith_code && ci.jpeg_color_space == JCS_YCbCr &&
                      ci.num_components == 3 && int(ci.image_width) == width && int(ci.image_height) == height;
    mcu_rows = ci.max_v_samp_factor * DCTSIZE;
    jpeg_destroy_decompress(&ci);
    if (!fits || err.warned) return {};
  }
  // Band i costs s * (rows above it) + (its rows), s ~ 0.45 being the entropy decode's share of a row (12 MP
  // 4:2:0 photo). Band heights shrinking by (1 - s) make every band end together: the first is
  // H * s / (1 - (1 - s)^n). Boundaries fall on iMCU rows.
  const int n = std::min(pool.num_threads(), 8);
  constexpr double kEntropyShare = 0.45;
  std::vector<int> edges = {0};
  double band = height * kEntropyShare / (1.0 - std::pow(1.0 - kEntropyShare, n)), at = 0;
  for (int i = 1; i < n; ++i, band *= 1.0 - kEntropyShare) {
    at += band;
    const int e = static_cast<int>(std::lround(at / mcu_rows)) * mcu_rows;
    if (e > edges.back() && e < height) edges.push_back(e);
  }
  edges.push_back(height);
  Image out(width, height, 3);
  std::atomic<bool> ok{true};
  // One band per thread at once (a band run after another on the same thread would pay its skip again).
  pool.run_on_all_threads([&](int t) {
    if (t + 1 < static_cast<int>(edges.size()) && !decode_band(bytes, edges[t], edges[t + 1], out)) ok = false;
  });
  if (!ok) return {};
  return out;
}

}  // namespace

RawImage decode_jpeg(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  std::unique_ptr<void, TjCloser> tj(tjInitDecompress());
  VLM_CHECK(tj, ErrorKind::kInternal, "{}: tjInitDecompress failed: {}", ctx.name, tjGetErrorStr2(nullptr));
  VLM_CHECK(bytes.size() <= 0xFFFFFFFFu, ErrorKind::kResource, "{}: JPEG larger than 4 GiB", ctx.name);
  auto* data = const_cast<unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.get(), data, size, &width, &height, &subsamp, &colorspace) != 0)
    throw_error(ErrorKind::kFormat, "{}: corrupt JPEG header: {}", ctx.name, tjGetErrorStr2(tj.get()));
  check_dimensions(ctx, width, height);

  RawImage raw;
  int pixel_format;
  if (colorspace == TJCS_GRAY) {
    raw.mode = RawMode::kL;
    pixel_format = TJPF_GRAY;
  } else if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    raw.mode = RawMode::kCMYK;
    pixel_format = TJPF_CMYK;
  } else {
    raw.mode = RawMode::kRGB;
    pixel_format = TJPF_RGB;
  }
  if (raw.mode == RawMode::kRGB) raw.pixels = decode_banded(bytes, width, height);
  if (!raw.pixels.empty()) {
    raw.exif = find_jpeg_exif(bytes);
    return raw;
  }
  raw.pixels = Image(width, height, raw_mode_bytes(raw.mode));
  if (tjDecompress2(tj.get(), data, size, raw.pixels.data(), width, 0, height, pixel_format, 0) != 0) {
    const std::string msg = tjGetErrorStr2(tj.get());
    // libjpeg reports recoverable damage as warnings. PIL also decodes those files, except a
    // truncated stream, which it refuses ("image file is truncated") unless LOAD_TRUNCATED_IMAGES.
    const bool warning = tjGetErrorCode(tj.get()) == TJERR_WARNING;
    if (!warning || msg.find("Premature end") != std::string::npos)
      throw_error(ErrorKind::kFormat, "{}: JPEG decode failed ({}x{}): {}", ctx.name, width, height, msg);
    VLM_LOG_WARN("{}: JPEG decoded with a warning: {}", ctx.name, msg);
  }
  if (raw.mode == RawMode::kCMYK) {
    uint8_t* p = raw.pixels.data();
    for (size_t i = 0, n = raw.pixels.size_bytes(); i < n; ++i) p[i] = static_cast<uint8_t>(255 - p[i]);
  }
  raw.exif = find_jpeg_exif(bytes);
  return raw;
}

}  // namespace vlm::image_detail
