// JPEG through TurboJPEG 2.1 with default flags (ISLOW IDCT, fancy upsampling): the same pixels PIL 9.4
// produces (dependencies.md §1). PIL opens 1-component files as L, 3 as RGB, 4 as CMYK with Adobe's
// inverted convention ("CMYK;I"), so 4-component pixels are inverted here before convert_to_rgb.
// The EXIF blob is the first APP1 "Exif\0\0" segment, as PIL's JpegImagePlugin keeps the first one.
#include <turbojpeg.h>

#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/log.h"
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
