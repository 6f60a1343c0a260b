// libFuzzer target for the image decoders (every format, detected by magic bytes) and the resize path
// behind them. Any input must either decode or throw vlm::Error; crashes, leaks, sanitizer reports and
// other exception types are bugs. The pixel limit is kept small so the fuzzer explores parsers rather
// than allocating huge canvases. Built by tests/fuzz/run_fuzz.sh against the image layer only:
//   fuzz-links: vlm_image
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "image/image.h"
#include "image/resample.h"

// libheif's dav1d path leaks a 40-byte allocation inside libdav1d on some corrupt AVIF inputs (found by
// this target; the allocation is dav1d's own). Suppressed so the run reports vlm's leaks only.
extern "C" const char* __lsan_default_suppressions() { return "leak:libdav1d.so\n"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlm::DecodeOptions opts;
  opts.max_pixels = 1 << 16;
  // The first byte picks options so both output layouts and the orientation switch get exercised.
  if (size > 0 && (data[0] & 1)) opts.output = vlm::ColorOutput::kRgba;
  if (size > 0 && (data[0] & 2)) opts.apply_exif_orientation = false;
  try {
    vlm::DecodedImage d = vlm::decode_image_bytes(std::span<const uint8_t>(data, size), "fuzz-input", opts);
    if (d.image.width() <= 0 || d.image.height() <= 0) __builtin_trap();
    const auto filter = static_cast<vlm::ResampleFilter>(d.image.width() % 6);
    vlm::Image small = vlm::resize_pil(d.image, 1 + d.image.height() % 17, 1 + d.image.width() % 13, filter);
    (void)small;
  } catch (const vlm::Error&) {
  }
  return 0;
}
