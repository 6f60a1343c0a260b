// GIF through giflib 5.2, first frame only, laid out as PIL 9.4's GifImagePlugin does for frame 0: a
// canvas of the logical screen (grown to cover the frame's extent), filled with the frame's
// transparency index (or index 0), the frame's indices pasted at its offset (de-interlaced), and the
// local colour table (else the global one) over PIL's default gray-ramp palette.
#include <gif_lib.h>

#include <cstring>
#include <memory>

#include "core/error.h"
#include "image/codecs.h"

namespace vlm::image_detail {
namespace {

struct GifMem {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

int gif_read(GifFileType* g, GifByteType* out, int n) {
  auto* m = static_cast<GifMem*>(g->UserData);
  const size_t k = std::min<size_t>(static_cast<size_t>(n < 0 ? 0 : n), m->size - m->pos);
  std::memcpy(out, m->data + m->pos, k);
  m->pos += k;
  return static_cast<int>(k);
}

struct GifCloser {
  void operator()(GifFileType* g) const {
    int err = 0;
    DGifCloseFile(g, &err);
  }
};

[[noreturn]] void gif_fail(const DecodeContext& ctx, int code, const char* what) {
  const char* msg = GifErrorString(code);
  throw_error(ErrorKind::kFormat, "{}: {}: {}", ctx.name, what, msg ? msg : "giflib error");
}

}  // namespace

RawImage decode_gif(std::span<const uint8_t> bytes, const DecodeContext& ctx) {
  GifMem mem{bytes.data(), bytes.size(), 0};
  int err = 0;
  std::unique_ptr<GifFileType, GifCloser> gp(DGifOpen(&mem, gif_read, &err));
  if (!gp) gif_fail(ctx, err, "corrupt GIF header");
  GifFileType* g = gp.get();
  check_dimensions(ctx, g->SWidth, g->SHeight);

  int transparency = -1;
  for (;;) {
    GifRecordType rec;
    if (DGifGetRecordType(g, &rec) == GIF_ERROR) gif_fail(ctx, g->Error, "GIF record read failed");
    if (rec == TERMINATE_RECORD_TYPE)
      throw_error(ErrorKind::kFormat, "{}: GIF file holds no image frame", ctx.name);
    if (rec == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* ext = nullptr;
      if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) gif_fail(ctx, g->Error, "GIF extension read failed");
      // Graphics control extension: flags bit 0 = transparency index present (block byte 3).
      if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) transparency = (ext[1] & 1) ? ext[4] : -1;
      while (ext) {
        if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) gif_fail(ctx, g->Error, "GIF extension read failed");
      }
      continue;
    }
    if (rec != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(g) == GIF_ERROR) gif_fail(ctx, g->Error, "GIF image descriptor read failed");
    break;
  }

  const GifImageDesc& d = g->Image;
  check_dimensions(ctx, d.Width, d.Height);
  const int64_t x1 = int64_t(d.Left) + d.Width, y1 = int64_t(d.Top) + d.Height;
  const int64_t cw = std::max<int64_t>(g->SWidth, x1), ch = std::max<int64_t>(g->SHeight, y1);
  check_dimensions(ctx, cw, ch);  // PIL re-runs its bomb check on the grown canvas too

  RawImage raw;
  raw.mode = RawMode::kP;
  init_gray_palette(raw);
  const ColorMapObject* cmap = d.ColorMap ? d.ColorMap : g->SColorMap;
  if (cmap && cmap->Colors) {
    for (int i = 0; i < cmap->ColorCount && i < 256; ++i) {
      raw.palette[i * 3] = cmap->Colors[i].Red;
      raw.palette[i * 3 + 1] = cmap->Colors[i].Green;
      raw.palette[i * 3 + 2] = cmap->Colors[i].Blue;
    }
  }
  if (transparency >= 0) raw.palette_alpha[transparency] = 0;
  raw.pixels = Image(static_cast<int>(cw), static_cast<int>(ch), 1);
  std::memset(raw.pixels.data(), transparency >= 0 ? transparency : 0, raw.pixels.size_bytes());

  // Interlaced frames store rows in four passes: every 8th from 0, every 8th from 4, every 4th from
  // 2, every 2nd from 1.
  static constexpr int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
  auto read_row = [&](int y) {
    if (DGifGetLine(g, raw.pixels.row(d.Top + y) + d.Left, d.Width) == GIF_ERROR)
      gif_fail(ctx, g->Error, "GIF frame data is corrupt or truncated");
  };
  if (d.Interlace) {
    for (int pass = 0; pass < 4; ++pass)
      for (int y = kStart[pass]; y < d.Height; y += kStep[pass]) read_row(y);
  } else {
    for (int y = 0; y < d.Height; ++y) read_row(y);
  }
  return raw;
}

}  // namespace vlm::image_detail
