// WebP (lossy, lossless, alpha) through libwebp 1.2, the library PIL's own plugin wraps: mode RGBA when
// the bitstream has alpha, else RGB, with libwebp's default (fancy) upsampling on both sides. The EXIF
// blob is the RIFF "EXIF" chunk. Animated WebP is refused (PIL would take frame 0 via libwebpdemux,
// which vlm_image does not link).
#include <webp/decode.h>

#include <cstring>

#include "core/error.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

std::vector<uint8_t> find_webp_exif(std::span<const uint8_t> b) {
  size_t at = 12;  // after "RIFF" <size> "WEBP"
  while (at + 8 <= b.size()) {
    const size_t len = size_t(b[at + 4]) | (size_t(b[at + 5]) << 8) | (size_t(b[at + 6]) << 16) |
                       (size_t(b[at + 7]) << 24);
    if (len > b.size() - at - 8) return {};
    if (std::memcmp(b.data() + at, "EXIF", 4) == 0)
      return std::vector<uint8_t>(b.begin() + at + 8, b.begin() + at + 8 + len);
    at += 8 + len + (len & 1);  // chunks are padded to even sizes
  }
  return {};
}

}  // namespace

RawImage decode_webp(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  WebPBitstreamFeatures f;
  const VP8StatusCode st = WebPGetFeatures(bytes.data(), bytes.size(), &f);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA)
    throw_error(ErrorKind::kFormat, "{}: WebP file is truncated (header incomplete)", ctx.name);
  VLM_CHECK(st == VP8_STATUS_OK, ErrorKind::kFormat, "{}: corrupt WebP header (libwebp status {})", ctx.name,
            static_cast<int>(st));
  check_dimensions(ctx, f.width, f.height);
  VLM_CHECK(!f.has_animation, ErrorKind::kUnsupported, "{}: animated WebP is not supported (save one frame as a still)",
            ctx.name);

  RawImage raw;
  raw.mode = f.has_alpha ? RawMode::kRGBA : RawMode::kRGB;
  raw.pixels = Image(f.width, f.height, raw_mode_bytes(raw.mode));
  const size_t stride = raw.pixels.row_bytes();
  const uint8_t* ok = f.has_alpha
                          ? WebPDecodeRGBAInto(bytes.data(), bytes.size(), raw.pixels.data(), raw.pixels.size_bytes(),
                                               static_cast<int>(stride))
                          : WebPDecodeRGBInto(bytes.data(), bytes.size(), raw.pixels.data(), raw.pixels.size_bytes(),
                                              static_cast<int>(stride));
  VLM_CHECK(ok, ErrorKind::kFormat, "{}: WebP decode failed ({}x{}, {}): the bitstream is corrupt or truncated",
            ctx.name, f.width, f.height, f.format == 2 ? "lossless" : "lossy");
  raw.exif = find_webp_exif(bytes);
  return raw;
}

}  // namespace vlm::image_detail
