// Image decoding: every format users have, delivered exactly as transformers' `load_image` would see it
// (PIL 9.4: `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`).
//
// Formats are detected from magic bytes, never from the extension. Each codec hands back the pixels in
// the PIL mode that PIL would have opened the file as (L, LA, P, RGB, RGBA, CMYK, I for 16-bit gray);
// `convert_to_rgb` then follows PIL's Convert.c for that mode (alpha is dropped without compositing,
// 16-bit gray is clipped at 255, CMYK uses PIL's integer formula). EXIF Orientation is applied as
// exif_transpose does for JPEG/PNG/WebP/TIFF; HEIF/AVIF orientation (irot/imir) is applied by libheif.
// A decompression-bomb guard checks the header's pixel count before any pixel buffer is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/memory.h"

namespace vlm {

// 8-bit interleaved pixels, rows packed (stride = width * channels). Storage is counted by the
// MemoryTracker under MemCategory::kImage. Move-only.
class Image {
 public:
  Image() = default;
  Image(int width, int height, int channels);  // uninitialised pixels
  Image(Image&&) noexcept = default;
  Image& operator=(Image&&) noexcept = default;

  int width() const { return width_; }
  int height() const { return height_; }
  int channels() const { return channels_; }
  bool empty() const { return width_ == 0 || height_ == 0; }
  size_t row_bytes() const { return static_cast<size_t>(width_) * channels_; }
  size_t size_bytes() const { return row_bytes() * height_; }
  uint8_t* data() { return static_cast<uint8_t*>(buf_.get()); }
  const uint8_t* data() const { return static_cast<const uint8_t*>(buf_.get()); }
  uint8_t* row(int y) { return data() + row_bytes() * y; }
  const uint8_t* row(int y) const { return data() + row_bytes() * y; }
  Image clone() const;

 private:
  int width_ = 0, height_ = 0, channels_ = 0;
  HostBuffer buf_{nullptr, HostDeleter{0, MemCategory::kImage}};
};

enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kHeif, kAvif, kTiff, kGif };
const char* image_format_name(ImageFormat f);

// The format named by the first bytes of a file (kUnknown when none matches).
ImageFormat sniff_image_format(std::span<const uint8_t> head);

// PIL's DecompressionBombError threshold: 2 * Image.MAX_IMAGE_PIXELS (= 2 * 89,478,485).
inline constexpr int64_t kDefaultMaxImagePixels = 178956970;

enum class ColorOutput {
  kRgb,   // 3 channels, as PIL convert("RGB") (what transformers' load_image returns)
  kRgba,  // 4 channels, as PIL convert("RGBA") for images that have alpha; opaque (255) otherwise
};

struct DecodeOptions {
  int64_t max_pixels = kDefaultMaxImagePixels;  // error when width*height exceeds it; <= 0 disables
  bool apply_exif_orientation = true;           // ImageOps.exif_transpose (JPEG, PNG, WebP, TIFF)
  ColorOutput output = ColorOutput::kRgb;
};

struct DecodedImage {
  Image image;                    // [height, width, channels] u8, upright (after orientation)
  ImageFormat format = ImageFormat::kUnknown;
  std::string source_mode;        // PIL mode the file decodes to: "RGB", "L", "P", "RGBA", "CMYK", ...
  int exif_orientation = 1;       // EXIF Orientation found (1-8; 1 when absent); applied if option set
  bool orientation_applied = false;
  int file_width = 0, file_height = 0;  // stored size, before orientation
};

// Decode a file; errors name `path`. Throws Error: kNotFound/kIo (cannot read), kFormat (corrupt,
// truncated, zero-sized), kUnsupported (unknown format), kResource (pixel limit exceeded).
DecodedImage decode_image_file(const std::string& path, const DecodeOptions& opts = {});
// Decode bytes held in memory; `name` is used in error messages.
DecodedImage decode_image_bytes(std::span<const uint8_t> bytes, std::string_view name,
                                const DecodeOptions& opts = {});

// EXIF Orientation (tag 0x0112 of IFD0) from a TIFF-structured EXIF blob, with or without the
// "Exif\0\0" prefix. Returns 0 when absent or unreadable.
int exif_orientation_from_blob(std::span<const uint8_t> blob);

// PIL Image.transpose for EXIF orientation `o` (2..8; 1 or anything else returns a copy), i.e. the
// exact pixel permutation ImageOps.exif_transpose applies.
Image apply_exif_orientation(const Image& src, int o);

}  // namespace vlm
