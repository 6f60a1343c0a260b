// HEIC/HEIF and AVIF through libheif 1.15 (HEVC via libde265, AV1 via dav1d/aom). The primary image is
// decoded to interleaved 8-bit RGB(A); libheif applies the irot/imir transforms itself, so the EXIF
// Orientation (which, per HEIF, must not be applied on top) is reported but never applied again.
#include <libheif/heif.h>

#include <cstring>
#include <memory>

#include "core/error.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

struct HeifCtx {
  void operator()(heif_context* c) const { heif_context_free(c); }
};
struct HeifHandle {
  void operator()(heif_image_handle* h) const { heif_image_handle_release(h); }
};
struct HeifImg {
  void operator()(heif_image* i) const { heif_image_release(i); }
};

void check_heif(const DecodeContext& ctx, heif_error e, const char* what) {
  if (e.code == heif_error_Ok) return;
  const ErrorKind kind = e.code == heif_error_Unsupported_feature || e.code == heif_error_Unsupported_filetype
                             ? ErrorKind::kUnsupported
                             : (e.code == heif_error_Memory_allocation_error ? ErrorKind::kResource : ErrorKind::kFormat);
  throw_error(kind, "{}: {} {}: {}", ctx.name, image_format_name(ctx.format), what, e.message ? e.message : "");
}

}  // namespace

RawImage decode_heif(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  std::unique_ptr<heif_context, HeifCtx> hc(heif_context_alloc());
  VLM_CHECK(hc, ErrorKind::kResource, "{}: heif_context_alloc failed", ctx.name);
  check_heif(ctx, heif_context_read_from_memory_without_copy(hc.get(), bytes.data(), bytes.size(), nullptr),
             "container is unreadable");
  heif_image_handle* hp = nullptr;
  check_heif(ctx, heif_context_get_primary_image_handle(hc.get(), &hp), "has no primary image");
  std::unique_ptr<heif_image_handle, HeifHandle> handle(hp);
  check_dimensions(ctx, heif_image_handle_get_width(hp), heif_image_handle_get_height(hp));

  const bool alpha = heif_image_handle_has_alpha_channel(hp);
  heif_image* ip = nullptr;
  check_heif(ctx,
             heif_decode_image(hp, &ip, heif_colorspace_RGB,
                               alpha ? heif_chroma_interleaved_RGBA : heif_chroma_interleaved_RGB, nullptr),
             "decode failed");
  std::unique_ptr<heif_image, HeifImg> img(ip);
  const int w = heif_image_get_width(ip, heif_channel_interleaved);
  const int h = heif_image_get_height(ip, heif_channel_interleaved);
  check_dimensions(ctx, w, h);
  int stride = 0;
  const uint8_t* plane = heif_image_get_plane_readonly(ip, heif_channel_interleaved, &stride);
  VLM_CHECK(plane, ErrorKind::kFormat, "{}: decoded HEIF image has no interleaved plane", ctx.name);
  VLM_CHECK(heif_image_get_bits_per_pixel_range(ip, heif_channel_interleaved) == 8, ErrorKind::kUnsupported,
            "{}: decoded HEIF image is not 8 bits per channel", ctx.name);

  RawImage raw;
  raw.mode = alpha ? RawMode::kRGBA : RawMode::kRGB;
  raw.pixels = Image(w, h, raw_mode_bytes(raw.mode));
  for (int y = 0; y < h; ++y)
    std::memcpy(raw.pixels.row(y), plane + static_cast<size_t>(stride) * y, raw.pixels.row_bytes());
  raw.orientation_by_codec = true;

  // The Exif item (4-byte TIFF-header offset, then the TIFF structure) for the orientation report.
  heif_item_id exif_id;
  if (heif_image_handle_get_list_of_metadata_block_IDs(hp, "Exif", &exif_id, 1) == 1) {
    const size_t n = heif_image_handle_get_metadata_size(hp, exif_id);
    std::vector<uint8_t> blob(n);
    if (n > 4 && heif_image_handle_get_metadata(hp, exif_id, blob.data()).code == heif_error_Ok) {
      const size_t off = (size_t(blob[0]) << 24) | (size_t(blob[1]) << 16) | (size_t(blob[2]) << 8) | blob[3];
      if (4 + off < n) raw.exif.assign(blob.begin() + 4 + static_cast<std::ptrdiff_t>(off), blob.end());
    }
  }
  return raw;
}

}  // namespace vlm::image_detail
