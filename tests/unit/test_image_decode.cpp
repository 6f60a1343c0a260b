// Decoder parity against the real oracle: PIL 9.4 under /usr/bin/python3 writes images of every mode
// and format it can (and raw PNGs for the 16-bit/low-bit layouts it cannot write), then decodes each one
// exactly as transformers' load_image does (ImageOps.exif_transpose(...).convert("RGB")). vlm's decoder
// must give the same bytes. HEIC/AVIF (no PIL plugin in 9.4) are encoded here with libheif and compared
// with the source pixels by PSNR. Corrupt, truncated, empty, unknown and bomb-sized inputs must raise
// typed errors that name the file.
#include <gtest/gtest.h>
#include <libheif/heif.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/thread_pool.h"
#include "image/image.h"
#include "support/test_support.h"

// Under the ASan build: the x265 encoder (used here only to make test HEIC files) and the dav1d decoder
// behind libheif keep small allocations until exit. Those are the libraries' own, not vlm's.
extern "C" const char* __lsan_default_suppressions() { return "leak:libx265.so\nleak:libdav1d.so\n"; }

namespace vlm {
namespace {

using test::TempDir;

constexpr const char* kOracle = R"PY(
import io, os, struct, sys, zlib
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

out = sys.argv[1]
rng = np.random.default_rng(20260611)
manifest = []

def content(h, w, c):
    # gradients plus noise: smooth areas and edges, so lossy codecs have real work to do
    y, x = np.mgrid[0:h, 0:w]
    planes = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x * 3 + y * 5) % 256), (x * y) % 256]
    a = np.stack([planes[i % 4] for i in range(c)], axis=-1).astype(np.int32)
    a = (a + rng.integers(-40, 41, a.shape)).clip(0, 255).astype(np.uint8)
    return a if c > 1 else a[..., 0]

def emit(name, data, tiff_orientation=False):
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(data)
    im = Image.open(path)
    if tiff_orientation:
        # PIL 9.4 applies a TIFF's Orientation tag on load and then exif_transpose applies it again
        # (Pillow issue #7381, fixed in 10.1 by #7383, which the reference's newer Pillow has). The
        # reference behaviour is the single application done by load().
        im.load()
    else:
        im = ImageOps.exif_transpose(im)   # transformers.image_utils.load_image
    im = im.convert("RGB")
    with open(path + ".rgb", "wb") as f:
        f.write(im.tobytes())
    manifest.append(f"{name} {im.size[0]} {im.size[1]}")

def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()

def exif_with(o):
    e = Image.Exif()
    e[0x0112] = o
    return e.tobytes()

def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

def raw_png(rows_bytes, w, h, depth, ctype, extra=b""):
    # rows_bytes: list of packed scanlines (filter type 0 added here)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows_bytes))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")

def pack_bits(row, depth):
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(row), per):
        v = 0
        for j in range(per):
            v <<= depth
            if i + j < len(row):
                v |= int(row[i + j])
        out.append(v)
    return bytes(out)

rgb = Image.fromarray(content(61, 97, 3))
rgba = Image.fromarray(content(45, 33, 4), "RGBA")
gray = Image.fromarray(content(50, 71, 1))

# ---- JPEG
emit("j_420.jpg", save(rgb, "JPEG", quality=90))
emit("j_444.jpg", save(rgb, "JPEG", quality=95, subsampling=0))
emit("j_422.jpg", save(rgb, "JPEG", quality=75, subsampling=1))
emit("j_prog.jpg", save(rgb, "JPEG", quality=85, progressive=True))
emit("j_big.jpg", save(Image.fromarray(content(480, 640, 3)), "JPEG", quality=92))
emit("j_gray.jpg", save(gray, "JPEG", quality=90))
emit("j_cmyk.jpg", save(Image.fromarray(content(40, 52, 4), "CMYK"), "JPEG", quality=90))
small = Image.fromarray(content(24, 40, 3))
for o in range(1, 9):
    emit(f"j_orient{o}.jpg", save(small, "JPEG", quality=90, exif=exif_with(o)))

# ---- PNG (PIL writes these modes itself)
emit("p_rgb.png", save(rgb, "PNG"))
emit("p_rgba.png", save(rgba, "PNG"))
emit("p_l.png", save(gray, "PNG"))
emit("p_la.png", save(Image.fromarray(content(30, 41, 2), "LA"), "PNG"))
emit("p_1.png", save(gray.convert("1"), "PNG"))
pal = rgb.quantize(200)
emit("p_p.png", save(pal, "PNG"))
emit("p_ptrns.png", save(pal, "PNG", transparency=bytes(range(0, 200, 1))))
g16 = Image.fromarray((content(20, 31, 1).astype(np.uint16) * 3).astype(np.uint16))  # values up to 765
emit("p_i16.png", save(g16, "PNG"))
for o in (3, 6, 8):
    emit(f"p_orient{o}.png", save(small, "PNG", exif=exif_with(o)))
xmp = PngImagePlugin.PngInfo()
xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="5"/></x:xmpmeta>')
emit("p_xmp5.png", save(small, "PNG", pnginfo=xmp))
rp = PngImagePlugin.PngInfo()
blob = exif_with(7)
rp.add_text("Raw profile type exif", "\nexif\n%8d\n%s\n" % (len(blob), blob.hex()))
emit("p_rawprofile7.png", save(small, "PNG", pnginfo=rp))
# ---- PNG layouts PIL cannot write: hand-made
a16 = rng.integers(0, 65536, (13, 17, 3), dtype=np.uint16)
emit("p_rgb16.png", raw_png([r.astype(">u2").tobytes() for r in a16], 17, 13, 16, 2))
a16 = rng.integers(0, 65536, (13, 17, 4), dtype=np.uint16)
emit("p_rgba16.png", raw_png([r.astype(">u2").tobytes() for r in a16], 17, 13, 16, 6))
a16 = rng.integers(0, 65536, (9, 11, 2), dtype=np.uint16)
emit("p_la16.png", raw_png([r.astype(">u2").tobytes() for r in a16], 11, 9, 16, 4))
a16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
emit("p_gray16_full.png", raw_png([r.astype(">u2").tobytes() for r in a16], 11, 9, 16, 0))
for d in (2, 4):
    g = rng.integers(0, 1 << d, (7, 13))
    emit(f"p_gray{d}.png", raw_png([pack_bits(r, d) for r in g], 13, 7, d, 0))
    plte = chunk(b"PLTE", bytes(rng.integers(0, 256, 3 * (1 << d), dtype=np.uint8)))
    emit(f"p_pal{d}.png", raw_png([pack_bits(r, d) for r in g], 13, 7, d, 3, plte))

# ---- WebP
emit("w_lossless.webp", save(rgb, "WEBP", lossless=True))
emit("w_lossless_rgba.webp", save(rgba, "WEBP", lossless=True))
emit("w_lossy.webp", save(rgb, "WEBP", quality=80))
emit("w_lossy_rgba.webp", save(rgba, "WEBP", quality=80))
emit("w_orient5.webp", save(small, "WEBP", lossless=True, exif=exif_with(5)))

# ---- TIFF
emit("t_rgb.tif", save(rgb, "TIFF"))
emit("t_rgb_lzw.tif", save(rgb, "TIFF", compression="tiff_lzw"))
emit("t_rgba.tif", save(rgba, "TIFF", compression="tiff_deflate"))
emit("t_l.tif", save(gray, "TIFF"))
emit("t_p.tif", save(pal, "TIFF"))
emit("t_i16.tif", save(g16.convert("I;16"), "TIFF"))
emit("t_cmyk.tif", save(Image.fromarray(content(40, 52, 4), "CMYK"), "TIFF"))
emit("t_la.tif", save(Image.fromarray(content(30, 41, 2), "LA"), "TIFF"))
emit("t_jpeg.tif", save(rgb, "TIFF", compression="jpeg", quality=90))
for o in (2, 3, 6, 7, 8):
    emit(f"t_orient{o}.tif", save(small, "TIFF", tiffinfo={274: o}), tiff_orientation=True)

# ---- GIF
emit("g_p.gif", save(rgb.quantize(256), "GIF"))
emit("g_small_palette.gif", save(rgb.quantize(5), "GIF"))
emit("g_transparent.gif", save(rgb.quantize(64), "GIF", transparency=3))
emit("g_gray.gif", save(gray, "GIF"))
emit("g_interlaced.gif", save(Image.fromarray(content(37, 23, 3)).quantize(32), "GIF", interlace=True))

with open(os.path.join(out, "manifest.txt"), "w") as f:
    f.write("\n".join(manifest) + "\n")
)PY";

std::string run_python(const std::string& script_path, const std::string& arg) {
  const std::string cmd = "/usr/bin/python3 '" + script_path + "' '" + arg + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "popen failed";
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  return rc == 0 ? std::string() : "python failed (" + std::to_string(rc) + "): " + out;
}

struct OracleCase {
  std::string name;
  int width, height;
};

class PilOracle : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    test::write_file(*dir_ / "oracle.py", kOracle);
    error_ = new std::string(run_python(*dir_ / "oracle.py", dir_->path()));
    std::ifstream m(*dir_ / "manifest.txt");
    cases_ = new std::vector<OracleCase>();
    OracleCase c;
    while (m >> c.name >> c.width >> c.height) cases_->push_back(c);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete error_;
    delete cases_;
  }
  static TempDir* dir_;
  static std::string* error_;
  static std::vector<OracleCase>* cases_;
};
TempDir* PilOracle::dir_ = nullptr;
std::string* PilOracle::error_ = nullptr;
std::vector<OracleCase>* PilOracle::cases_ = nullptr;

TEST_F(PilOracle, EveryFileDecodesToPilsBytes) {
  ASSERT_EQ(*error_, "");
  ASSERT_GE(cases_->size(), 50u);
  std::map<std::string, int> per_format;
  for (const auto& c : *cases_) {
    SCOPED_TRACE(c.name);
    DecodedImage d = decode_image_file(*dir_ / c.name);
    const std::string want = test::read_file(*dir_ / (c.name + ".rgb"));
    EXPECT_EQ(d.image.width(), c.width);
    EXPECT_EQ(d.image.height(), c.height);
    EXPECT_EQ(d.image.channels(), 3);
    if (want.size() != d.image.size_bytes()) {
      ADD_FAILURE() << "size differs";
      continue;
    }
    size_t differing = 0;
    int max_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const int diff = std::abs(int(uint8_t(want[i])) - int(d.image.data()[i]));
      differing += diff != 0;
      max_diff = std::max(max_diff, diff);
    }
    EXPECT_EQ(differing, 0u) << "max diff " << max_diff << ", mode " << d.source_mode;
    per_format[image_format_name(d.format)]++;
  }
  // every codec took part
  for (const char* f : {"JPEG", "PNG", "WebP", "TIFF", "GIF"}) EXPECT_GE(per_format[f], 4) << f;
}

TEST_F(PilOracle, ReportsModesAndOrientation) {
  ASSERT_EQ(*error_, "");
  auto dec = [&](const std::string& n) { return decode_image_file(*dir_ / n); };
  EXPECT_EQ(dec("j_cmyk.jpg").source_mode, "CMYK");
  EXPECT_EQ(dec("j_gray.jpg").source_mode, "L");
  EXPECT_EQ(dec("p_i16.png").source_mode, "I");
  EXPECT_EQ(dec("p_ptrns.png").source_mode, "P");
  EXPECT_EQ(dec("w_lossy_rgba.webp").source_mode, "RGBA");
  for (int o = 1; o <= 8; ++o) {
    DecodedImage d = dec("j_orient" + std::to_string(o) + ".jpg");
    EXPECT_EQ(d.exif_orientation, o);
    EXPECT_EQ(d.orientation_applied, o > 1);
    EXPECT_EQ(d.file_width, 40);
    EXPECT_EQ(d.image.width(), o >= 5 ? 24 : 40);
  }
  EXPECT_EQ(dec("p_xmp5.png").exif_orientation, 5);
  EXPECT_EQ(dec("p_rawprofile7.png").exif_orientation, 7);
  EXPECT_EQ(dec("t_orient6.tif").exif_orientation, 6);
  // Orientation can be switched off: then the stored pixel order comes back.
  DecodeOptions keep;
  keep.apply_exif_orientation = false;
  DecodedImage raw6 = decode_image_file(*dir_ / "j_orient6.jpg", keep);
  DecodedImage raw1 = decode_image_file(*dir_ / "j_orient1.jpg");
  ASSERT_EQ(raw6.image.size_bytes(), raw1.image.size_bytes());
  EXPECT_EQ(std::memcmp(raw6.image.data(), raw1.image.data(), raw1.image.size_bytes()), 0);
}

TEST_F(PilOracle, RgbaOutputKeepsAlpha) {
  ASSERT_EQ(*error_, "");
  DecodeOptions o;
  o.output = ColorOutput::kRgba;
  DecodedImage a = decode_image_file(*dir_ / "p_rgba.png", o);
  DecodedImage rgb = decode_image_file(*dir_ / "p_rgba.png");
  ASSERT_EQ(a.image.channels(), 4);
  bool some_translucent = false;
  for (int i = 0; i < a.image.width() * a.image.height(); ++i) {
    ASSERT_EQ(std::memcmp(a.image.data() + 4 * i, rgb.image.data() + 3 * i, 3), 0);
    some_translucent |= a.image.data()[4 * i + 3] != 255;
  }
  EXPECT_TRUE(some_translucent);
  DecodedImage opaque = decode_image_file(*dir_ / "j_420.jpg", o);
  for (int i = 0; i < opaque.image.width() * opaque.image.height(); ++i) ASSERT_EQ(opaque.image.data()[4 * i + 3], 255);
}

TEST_F(PilOracle, DetectsFormatByContentNotExtension) {
  ASSERT_EQ(*error_, "");
  const std::string png = test::read_file(*dir_ / "p_rgb.png");
  test::write_file(*dir_ / "misnamed.jpg", png);
  DecodedImage d = decode_image_file(*dir_ / "misnamed.jpg");
  EXPECT_EQ(d.format, ImageFormat::kPng);
}

// ---- errors --------------------------------------------------------------------------------------

ErrorKind error_kind_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no vlm::Error thrown";
  return ErrorKind::kInternal;
}

TEST_F(PilOracle, TruncatedAndCorruptFilesGiveFormatErrorsNamingTheFile) {
  ASSERT_EQ(*error_, "");
  for (const char* name : {"j_big.jpg", "j_prog.jpg", "p_rgb.png", "p_i16.png", "w_lossy.webp", "w_lossless.webp",
                           "t_rgb.tif", "t_rgb_lzw.tif", "g_p.gif"}) {
    SCOPED_TRACE(name);
    const std::string full = test::read_file(*dir_ / name);
    for (double keep : {0.05, 0.5, 0.9}) {
      const std::string cut = full.substr(0, static_cast<size_t>(full.size() * keep));
      const std::string path = *dir_ / (std::string("cut_") + name);
      test::write_file(path, cut);
      std::string msg;
      ErrorKind k = error_kind_of([&] { decode_image_file(path); }, &msg);
      EXPECT_EQ(k, ErrorKind::kFormat) << keep << ": " << msg;
      EXPECT_NE(msg.find("cut_"), std::string::npos) << msg;
    }
    // Header intact, pixel data overwritten with garbage: either decodes (codec resynchronised) or
    // a typed error, never a crash.
    std::string broken = full;
    for (size_t i = broken.size() / 3; i < broken.size() * 2 / 3; i += 7) broken[i] = static_cast<char>(i * 31);
    const std::string path = *dir_ / (std::string("garbled_") + name);
    test::write_file(path, broken);
    try {
      decode_image_file(path);
    } catch (const Error& e) {
      EXPECT_TRUE(e.kind() == ErrorKind::kFormat || e.kind() == ErrorKind::kUnsupported) << e.what();
    }
  }
}

TEST(ImageErrors, EmptyUnknownAndMissingFiles) {
  TempDir dir;
  test::write_file(dir / "empty.jpg", "");
  std::string msg;
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "empty.jpg"); }, &msg), ErrorKind::kFormat);
  EXPECT_NE(msg.find("empty.jpg"), std::string::npos);
  test::write_file(dir / "notes.png", "hello, this is text");
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "notes.png"); }, &msg), ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("notes.png"), std::string::npos);
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "absent.png"); }), ErrorKind::kNotFound);
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir.path()); }), ErrorKind::kIo);
}

// A PNG whose IHDR claims `w`x`h` followed by a tiny IDAT: the guard must fire from the header alone.
std::string png_header_only(uint32_t w, uint32_t h) {
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  };
  auto crc = [](const std::string& s) {
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : s) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc(type + data));
  };
  std::string ihdr = be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) +
         chunk("IEND", "");
}

TEST(ImageErrors, DecompressionBombIsRefusedFromTheHeader) {
  TempDir dir;
  // 20000 x 20000 = 4e8 pixels > 178,956,970 (PIL's DecompressionBombError threshold).
  test::write_file(dir / "bomb.png", png_header_only(20000, 20000));
  const int64_t before = MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[int(MemCategory::kImage)];
  std::string msg;
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "bomb.png"); }, &msg), ErrorKind::kResource);
  EXPECT_NE(msg.find("400000000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bomb.png"), std::string::npos) << msg;
  const int64_t peak_after = MemoryTracker::instance().snapshot(MemDevice::kHost).by_category[int(MemCategory::kImage)];
  EXPECT_EQ(before, peak_after);
  // Just under the default limit passes the guard (and then fails on the missing pixel data).
  test::write_file(dir / "big_ok.png", png_header_only(13377, 13377));  // 178,944,129 pixels
  DecodeOptions small_limit;
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "big_ok.png"); }), ErrorKind::kFormat);
  // A configurable limit applies to real images as well.
  small_limit.max_pixels = 100;
  test::write_file(dir / "ok.png", png_header_only(11, 10));
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "ok.png", small_limit); }), ErrorKind::kResource);
  // Zero-sized image.
  test::write_file(dir / "zero.png", png_header_only(0, 10));
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "zero.png"); }), ErrorKind::kFormat);
}

TEST(ImageErrors, GifAndJpegBombHeaders) {
  TempDir dir;
  // GIF logical screen 65535 x 65535 with no frames.
  std::string gif = "GIF89a";
  gif += std::string("\xff\xff\xff\xff\x00\x00\x00", 7);
  gif += ";";
  test::write_file(dir / "bomb.gif", gif);
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "bomb.gif"); }), ErrorKind::kResource);
  // JPEG SOF0 claiming 65500 x 65500 (baseline, 3 components) with no scan.
  std::string jpg("\xff\xd8", 2);
  jpg += std::string("\xff\xdb\x00\x43\x00", 5) + std::string(64, '\x01');
  jpg += std::string("\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x00\x03\x11\x00", 19);
  jpg += std::string("\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00", 14);
  jpg += std::string("\xff\xd9", 2);
  test::write_file(dir / "bomb.jpg", jpg);
  EXPECT_EQ(error_kind_of([&] { decode_image_file(dir / "bomb.jpg"); }), ErrorKind::kResource);
}

// ---- banded JPEG decode (photos on a pool of 4+ threads) ------------------------------------------

// A photo-like W x H JPEG from TurboJPEG (gradients, edges and noise), with `subsamp` chroma and, when
// `restart_rows` > 0, restart markers every that many MCU rows; `progressive` writes a progressive file.
std::vector<uint8_t> make_photo_jpeg(int w, int h, int subsamp, int restart_rows, bool progressive) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  uint32_t seed = 12345;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      seed = seed * 1664525u + 1013904223u;
      const int noise = int(seed >> 27) - 16;
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(std::clamp(int(127 + 100 * std::sin(x * 0.01 + y * 0.003)) + noise, 0, 255));
      p[1] = uint8_t(std::clamp(y * 255 / h + noise, 0, 255));
      p[2] = uint8_t(std::clamp(((x / 37 + y / 23) & 1) * 160 + 40 + noise, 0, 255));
    }
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  int flags = progressive ? TJFLAG_PROGRESSIVE : 0;
  if (restart_rows > 0) setenv("TJ_RESTART", std::to_string(restart_rows).c_str(), 1);
  EXPECT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, subsamp, 90, flags), 0) << tjGetErrorStr2(tj);
  if (restart_rows > 0) unsetenv("TJ_RESTART");
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// tjDecompress2's RGB pixels: the reference the banded path must reproduce byte for byte.
std::vector<uint8_t> turbojpeg_rgb(const std::vector<uint8_t>& jpeg, int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  tjhandle tj = tjInitDecompress();
  EXPECT_EQ(tjDecompress2(tj, const_cast<uint8_t*>(jpeg.data()), jpeg.size(), rgb.data(), w, 0, h, TJPF_RGB, 0), 0);
  tjDestroy(tj);
  return rgb;
}

TEST(ImageJpegBands, PhotosDecodeInBandsToTurboJpegsBytes) {
  const int threads = ThreadPool::global().num_threads();
  ThreadPool::set_global_threads(8);  // the banded path needs 4+ threads
  struct Case {
    int w, h, subsamp, restart_rows;
    bool progressive;
  };
  // 4:2:0 (16-row iMCUs) with a partial last iMCU row, 4:2:2 and 4:4:4 (8-row iMCUs), odd widths, restart
  // markers, and a progressive file (which takes the TurboJPEG path).
  for (const Case& c : {Case{2016, 1509, TJSAMP_420, 0, false}, Case{1999, 1201, TJSAMP_422, 0, false},
                        Case{1733, 1300, TJSAMP_444, 0, false}, Case{2048, 1536, TJSAMP_420, 2, false},
                        Case{2016, 1509, TJSAMP_420, 0, true}}) {
    SCOPED_TRACE(::testing::Message() << c.w << "x" << c.h << " subsamp " << c.subsamp << " restart " << c.restart_rows
                                      << (c.progressive ? " progressive" : ""));
    const std::vector<uint8_t> jpeg = make_photo_jpeg(c.w, c.h, c.subsamp, c.restart_rows, c.progressive);
    const DecodedImage d = decode_image_bytes(jpeg, "photo.jpg");
    ASSERT_EQ(d.image.width(), c.w);
    ASSERT_EQ(d.image.height(), c.h);
    ASSERT_EQ(d.image.channels(), 3);
    const std::vector<uint8_t> ref = turbojpeg_rgb(jpeg, c.w, c.h);
    EXPECT_EQ(std::memcmp(d.image.data(), ref.data(), ref.size()), 0);
  }
  // Extra bytes between the last scan and EOI (the last band reads on to EOI, as tjDecompress2 does): the clean
  // file's pixels.
  const std::vector<uint8_t> clean = make_photo_jpeg(2016, 1509, TJSAMP_420, 0, false);
  std::vector<uint8_t> extra(clean.begin(), clean.end() - 2);
  for (uint8_t b : {0x00, 0x01, 0x02, 0xFF, 0xD9}) extra.push_back(b);
  const DecodedImage e = decode_image_bytes(extra, "extra.jpg");
  const std::vector<uint8_t> ref = turbojpeg_rgb(clean, 2016, 1509);
  ASSERT_EQ(e.image.size_bytes(), ref.size());
  EXPECT_EQ(std::memcmp(e.image.data(), ref.data(), ref.size()), 0);
  // A truncated photo: a band meets the premature end, the TurboJPEG path then refuses it as before.
  std::vector<uint8_t> cut = clean;
  cut.resize(cut.size() / 2);
  EXPECT_EQ(error_kind_of([&] { decode_image_bytes(cut, "cut.jpg"); }), ErrorKind::kFormat);
  ThreadPool::set_global_threads(threads);
}

// ---- HEIC / AVIF via libheif's own encoders -------------------------------------------------------

heif_error write_to_string(heif_context*, const void* data, size_t size, void* user) {
  static_cast<std::string*>(user)->append(static_cast<const char*>(data), size);
  return heif_error{heif_error_Ok, heif_suberror_Unspecified, "ok"};
}

// Encodes a W x H RGB test pattern; returns "" when the encoder is unavailable.
std::string encode_heif(heif_compression_format fmt, int w, int h, std::vector<uint8_t>& rgb, heif_orientation orient) {
  rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(x * 255 / (w - 1));
      p[1] = uint8_t(y * 255 / (h - 1));
      p[2] = uint8_t(((x / 8 + y / 8) & 1) ? 200 : 40);
    }
  heif_context* ctx = heif_context_alloc();
  heif_encoder* enc = nullptr;
  if (heif_context_get_encoder_for_format(ctx, fmt, &enc).code != heif_error_Ok) {
    heif_context_free(ctx);
    return "";
  }
  heif_encoder_set_lossy_quality(enc, 90);
  heif_image* img = nullptr;
  heif_image_create(w, h, heif_colorspace_RGB, heif_chroma_interleaved_RGB, &img);
  heif_image_add_plane(img, heif_channel_interleaved, w, h, 8);
  int stride = 0;
  uint8_t* plane = heif_image_get_plane(img, heif_channel_interleaved, &stride);
  for (int y = 0; y < h; ++y) std::memcpy(plane + size_t(y) * stride, &rgb[size_t(y) * w * 3], size_t(w) * 3);
  heif_encoding_options* opts = heif_encoding_options_alloc();
  opts->image_orientation = orient;
  heif_image_handle* handle = nullptr;
  heif_error e = heif_context_encode_image(ctx, img, enc, opts, &handle);
  std::string out;
  if (e.code == heif_error_Ok) {
    heif_writer writer{1, write_to_string};
    heif_context_write(ctx, &writer, &out);
  }
  heif_image_handle_release(handle);
  heif_encoding_options_free(opts);
  heif_image_release(img);
  heif_encoder_release(enc);
  heif_context_free(ctx);
  return out;
}

double psnr(const uint8_t* a, const uint8_t* b, size_t n) {
  double se = 0;
  for (size_t i = 0; i < n; ++i) se += double(a[i] - b[i]) * double(a[i] - b[i]);
  return se == 0 ? 99.0 : 10.0 * std::log10(255.0 * 255.0 / (se / double(n)));
}

TEST(ImageHeif, HeicAndAvifRoundTripWithinCodecTolerance) {
  TempDir dir;
  for (auto [fmt, name, want] : {std::tuple{heif_compression_HEVC, "x.heic", ImageFormat::kHeif},
                                 std::tuple{heif_compression_AV1, "x.avif", ImageFormat::kAvif}}) {
    SCOPED_TRACE(name);
    std::vector<uint8_t> src;
    const std::string bytes = encode_heif(fmt, 96, 64, src, heif_orientation_normal);
    ASSERT_FALSE(bytes.empty()) << "libheif has no encoder for " << name;
    test::write_file(dir / name, bytes);
    DecodedImage d = decode_image_file(dir / name);
    EXPECT_EQ(d.format, want);
    ASSERT_EQ(d.image.width(), 96);
    ASSERT_EQ(d.image.height(), 64);
    EXPECT_GT(psnr(d.image.data(), src.data(), src.size()), 35.0);
    const std::string cut = bytes.substr(0, bytes.size() / 2);
    test::write_file(dir / (std::string("cut_") + name), cut);
    EXPECT_THROW(decode_image_file(dir / (std::string("cut_") + name)), Error);
  }
}

TEST(ImageHeif, IrotIsAppliedByLibheifAndNotTwice) {
  TempDir dir;
  std::vector<uint8_t> src;
  // heif_orientation_rotate_90_cw == EXIF 6: displayed image is the source rotated 90° clockwise.
  const std::string bytes = encode_heif(heif_compression_HEVC, 96, 64, src, heif_orientation_rotate_90_cw);
  ASSERT_FALSE(bytes.empty());
  test::write_file(dir / "rot.heic", bytes);
  DecodedImage d = decode_image_file(dir / "rot.heic");
  ASSERT_EQ(d.image.width(), 64);
  ASSERT_EQ(d.image.height(), 96);
  Image s(96, 64, 3);
  std::memcpy(s.data(), src.data(), src.size());
  Image expected = apply_exif_orientation(s, 6);
  EXPECT_GT(psnr(d.image.data(), expected.data(), expected.size_bytes()), 35.0);
  EXPECT_FALSE(d.orientation_applied);
}

}  // namespace
}  // namespace vlm
