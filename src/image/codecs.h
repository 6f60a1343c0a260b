// Internal seam between the format dispatcher (image.cpp) and the per-format decoders (decode_*.cpp).
// Each decoder returns pixels in the PIL mode PIL 9.4 would open that file as, plus what the
// orientation step needs (the EXIF blob, or TIFF's own Orientation tag). Not part of the public API.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "image/image.h"

namespace vlm::image_detail {

// PIL modes the decoders can produce. kI16 stores native uint16 gray in 2 bytes per pixel.
enum class RawMode { kBilevel, kL, kLA, kP, kRGB, kRGBA, kCMYK, kI16 };
const char* raw_mode_name(RawMode m);
int raw_mode_bytes(RawMode m);  // bytes per pixel in RawImage::pixels

struct RawImage {
  RawMode mode = RawMode::kRGB;
  Image pixels;  // channels() == raw_mode_bytes(mode)
  // Palette for kP: 256 RGB entries (PIL initialises unused entries to the gray ramp) and alpha
  // (255 unless the file gives transparency).
  std::array<uint8_t, 768> palette{};
  std::array<uint8_t, 256> palette_alpha{};
  std::vector<uint8_t> exif;   // EXIF blob as found (may start with "Exif\0\0"); empty if none
  int orientation_tag = 0;     // an orientation read directly (TIFF tag, PNG XMP); 0 if none
  bool orientation_by_codec = false;  // the codec already applied it (HEIF irot/imir)
};

struct DecodeContext {
  std::string_view name;  // file name for messages
  const DecodeOptions& opts;
  ImageFormat format;
};

// Throws kFormat for a zero dimension and kResource above opts.max_pixels. Call from the header,
// before any pixel allocation.
void check_dimensions(const DecodeContext& ctx, int64_t width, int64_t height);
// Sets palette to PIL's default (gray ramp, opaque) before a file palette overwrites entries.
void init_gray_palette(RawImage& raw);

RawImage decode_jpeg(std::span<const uint8_t> bytes, const DecodeContext& ctx);
RawImage decode_png(std::span<const uint8_t> bytes, const DecodeContext& ctx);
RawImage decode_webp(std::span<const uint8_t> bytes, const DecodeContext& ctx);
RawImage decode_heif(std::span<const uint8_t> bytes, const DecodeContext& ctx);
RawImage decode_tiff(std::span<const uint8_t> bytes, const DecodeContext& ctx);
RawImage decode_gif(std::span<const uint8_t> bytes, const DecodeContext& ctx);

}  // namespace vlm::image_detail
