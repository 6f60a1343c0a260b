// PIL-exact resize (Resample.c / Geometry.c of Pillow 9.4, re-derived here) and processor helpers.
// See resample.h for the contract; comments below say where PIL's exact arithmetic matters.
#include "image/resample.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"

namespace vlm {

const char* resample_filter_name(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::kNearest: return "nearest";
    case ResampleFilter::kBox: return "box";
    case ResampleFilter::kBilinear: return "bilinear";
    case ResampleFilter::kHamming: return "hamming";
    case ResampleFilter::kBicubic: return "bicubic";
    case ResampleFilter::kLanczos: return "lanczos";
  }
  return "?";
}

ResampleFilter resample_filter_from_pil_code(int code) {
  switch (code) {
    case 0: return ResampleFilter::kNearest;
    case 1: return ResampleFilter::kLanczos;
    case 2: return ResampleFilter::kBilinear;
    case 3: return ResampleFilter::kBicubic;
    case 4: return ResampleFilter::kBox;
    case 5: return ResampleFilter::kHamming;
    default: break;
  }
  throw_error(ErrorKind::kInvalidArgument, "resample: PIL filter code {} is not one of 0-5", code);
}

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's fixed point: 22 fractional bits

// Filter kernels exactly as PIL writes them (double arithmetic; the 0.54f/0.46f float literals of
// the Hamming window included).
double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}
double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Keys cubic; OpenCV's -0.75 is a different kernel
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}
double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};
Filter filter_of(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::kBox: return {box_filter, 0.5};
    case ResampleFilter::kBilinear: return {bilinear_filter, 1.0};
    case ResampleFilter::kHamming: return {hamming_filter, 1.0};
    case ResampleFilter::kBicubic: return {bicubic_filter, 2.0};
    case ResampleFilter::kLanczos: return {lanczos_filter, 3.0};
    case ResampleFilter::kNearest: break;
  }
  return {nullptr, 0};
}

// Per output position: first source index, tap count, and ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  int precision = kPrecisionBits;  // fractional bits of kk (PIL: 22; torch's int16 weights: 14-15)
  std::vector<int> bounds;   // [out, 2]: xmin, xcount
  std::vector<int32_t> kk;   // [out, ksize]
};

Coeffs precompute_coeffs(int in_size, float in0, float in1, int out_size, const Filter& filter) {
  // PIL computes the scale from float box edges, then works in double.
  double filterscale = static_cast<double>(in1 - in0) / out_size;
  const double scale = filterscale;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = filter.support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.kk.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation toward zero, as PIL's (int)
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    int32_t* out = &c.kk[size_t(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? k[x] / ww : k[x];
      // normalize_coeffs_8bpc: round half away from zero into 22-bit fixed point
      out[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                     : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[size_t(xx) * 2] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t acc, int precision) {
  const int32_t v = acc >> precision;  // arithmetic shift, as PIL's table index
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output pixel of the horizontal pass, scalar: PIL's loop exactly.
template <int C>
inline void convolve_pixel_scalar(const uint8_t* s, const int32_t* k, int count, int prec, uint8_t* dst) {
  int32_t ss[C];
  for (int ch = 0; ch < C; ++ch) ss[ch] = 1 << (prec - 1);
  for (int x = 0; x < count; ++x)
    for (int ch = 0; ch < C; ++ch) ss[ch] += s[x * C + ch] * k[x];
  for (int ch = 0; ch < C; ++ch) dst[ch] = clip8(ss[ch], prec);
}

// AVX2 version for 3 and 4 channels: two taps per step, each pixel widened to 4 int32 lanes
// (R, G, B, pad) and multiplied by its tap weight with 32-bit products, so every sum is the same
// integer PIL computes (integer addition is exact in any order). `avail` bytes are readable from s.
template <int C>
__attribute__((target("avx2"))) void convolve_pixel_avx2(const uint8_t* s, const int32_t* k, int count,
                                                        size_t avail, int prec, uint8_t* dst) {
  // C == 3: bytes [R0 G0 B0 R1 G1 B1 ..] → [R0 G0 B0 0 R1 G1 B1 0]; C == 4: identity.
  const __m128i spread = C == 3 ? _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1)
                                : _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i acc = _mm256_setzero_si256();
  int x = 0;
  for (; x + 1 < count && size_t(x) * C + 8 <= avail; x += 2) {
    const __m128i px = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + size_t(x) * C)), spread);
    const __m256i v = _mm256_cvtepu8_epi32(px);
    const __m256i w = _mm256_setr_m128i(_mm_set1_epi32(k[x]), _mm_set1_epi32(k[x + 1]));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, w));
  }
  alignas(16) int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes),
                  _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1)));
  for (int ch = 0; ch < C; ++ch) {
    int32_t ss = (1 << (prec - 1)) + lanes[ch];
    for (int t = x; t < count; ++t) ss += s[size_t(t) * C + ch] * k[t];
    dst[ch] = clip8(ss, prec);
  }
}

bool have_avx2() {
  static const bool v = __builtin_cpu_supports("avx2");
  return v;
}

// Horizontal pass: out row y = convolution of in row (y + row_offset). in/out: [h, w, C] u8.
template <int C>
void resample_horizontal(const Image& in, Image& out, int row_offset, const Coeffs& c) {
  const int ow = out.width();
  const bool simd = (C == 3 || C == 4) && have_avx2();
  ThreadPool::global().parallel_for(out.height(), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* src = in.row(static_cast<int>(y) + row_offset);
      uint8_t* dst = out.row(static_cast<int>(y));
      for (int xx = 0; xx < ow; ++xx) {
        const int xmin = c.bounds[size_t(xx) * 2], xcount = c.bounds[size_t(xx) * 2 + 1];
        const int32_t* k = &c.kk[size_t(xx) * c.ksize];
        const uint8_t* s = src + size_t(xmin) * C;
        if (simd)
          convolve_pixel_avx2<C>(s, k, xcount, in.row_bytes() - size_t(xmin) * C, c.precision, dst + size_t(xx) * C);
        else
          convolve_pixel_scalar<C>(s, k, xcount, c.precision, dst + size_t(xx) * C);
      }
    }
  }, 8);
}

// One output row of the vertical pass with AVX2: for each 16 bytes, the ycount taps are summed in registers
// (u8 widened to int32, 32-bit products, the same integer sums as PIL's loop), then shifted and saturated to
// u8 by packs/packus, which clamp to [0, 255] exactly as clip8 does. The tail bytes go through clip8.
__attribute__((target("avx2"))) void vertical_row_avx2(const uint8_t* const* rows, const int32_t* k, int ycount,
                                                       int n, int prec, uint8_t* dst) {
  const __m256i init = _mm256_set1_epi32(1 << (prec - 1));
  const __m128i shift = _mm_cvtsi32_si128(prec);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i lo = init, hi = init;
    for (int y = 0; y < ycount; ++y) {
      const __m128i px = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[y] + i));
      const __m256i w = _mm256_set1_epi32(k[y]);
      lo = _mm256_add_epi32(lo, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(px), w));
      hi = _mm256_add_epi32(hi, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(px, 8)), w));
    }
    lo = _mm256_sra_epi32(lo, shift);
    hi = _mm256_sra_epi32(hi, shift);
    // packs interleaves the 128-bit lanes: [lo0-3 hi0-3 | lo4-7 hi4-7]; permute back to lo0-7 hi0-7.
    const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
    const __m128i b8 = _mm_packus_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), b8);
  }
  for (; i < n; ++i) {
    int32_t ss = 1 << (prec - 1);
    for (int y = 0; y < ycount; ++y) ss += rows[y][i] * k[y];
    dst[i] = clip8(ss, prec);
  }
}

// Vertical pass: out row yy = sum over in rows bounds[yy]... (bounds already relative to `in`).
template <int C>
void resample_vertical(const Image& in, Image& out, const Coeffs& c) {
  const int rowlen = out.width() * C;
  const bool simd = have_avx2();
  ThreadPool::global().parallel_for(out.height(), [&](int64_t y0, int64_t y1) {
    std::vector<int32_t> acc(simd ? 0 : static_cast<size_t>(rowlen));
    std::vector<const uint8_t*> rows(static_cast<size_t>(c.ksize));
    for (int64_t yy = y0; yy < y1; ++yy) {
      const int ymin = c.bounds[size_t(yy) * 2], ycount = c.bounds[size_t(yy) * 2 + 1];
      const int32_t* k = &c.kk[size_t(yy) * c.ksize];
      uint8_t* dst = out.row(static_cast<int>(yy));
      if (simd) {
        for (int y = 0; y < ycount; ++y) rows[size_t(y)] = in.row(ymin + y);
        vertical_row_avx2(rows.data(), k, ycount, rowlen, c.precision, dst);
        continue;
      }
      std::fill(acc.begin(), acc.end(), 1 << (c.precision - 1));
      // Row-wise accumulation gives the same integer sums as PIL's per-pixel loop (integer adds
      // are exact) and streams through memory.
      for (int y = 0; y < ycount; ++y) {
        const uint8_t* s = in.row(ymin + y);
        for (int i = 0; i < rowlen; ++i) acc[i] += s[i] * k[y];
      }
      for (int i = 0; i < rowlen; ++i) dst[i] = clip8(acc[i], c.precision);
    }
  }, 4);
}

// The two-pass driver shared by both backends: horizontal pass over just the rows the vertical pass
// reads (rows are independent, so this equals a full-height pass), uint8 between passes.
template <int C>
Image two_pass(const Image& src, int out_w, int out_h, Coeffs& ch, Coeffs& cv, bool need_h, bool need_v) {
  const int ybox_first = cv.bounds[0];
  const int ybox_last = cv.bounds[size_t(out_h) * 2 - 2] + cv.bounds[size_t(out_h) * 2 - 1];
  Image tmp;
  const Image* cur = &src;
  if (need_h) {
    for (int i = 0; i < out_h; ++i) cv.bounds[size_t(i) * 2] -= ybox_first;
    tmp = Image(out_w, ybox_last - ybox_first, C);
    resample_horizontal<C>(src, tmp, ybox_first, ch);
    cur = &tmp;
  }
  if (need_v) {
    Image out(cur->width(), out_h, C);
    resample_vertical<C>(*cur, out, cv);
    return out;
  }
  return need_h ? std::move(tmp) : src.clone();
}

Image two_pass_any(const Image& src, int out_w, int out_h, Coeffs& ch, Coeffs& cv, bool need_h, bool need_v) {
  switch (src.channels()) {
    case 1: return two_pass<1>(src, out_w, out_h, ch, cv, need_h, need_v);
    case 2: return two_pass<2>(src, out_w, out_h, ch, cv, need_h, need_v);
    case 3: return two_pass<3>(src, out_w, out_h, ch, cv, need_h, need_v);
    default: return two_pass<4>(src, out_w, out_h, ch, cv, need_h, need_v);
  }
}

Image resample_pil_filtered(const Image& src, int out_w, int out_h, const Filter& f, const ResampleBox& box) {
  // PIL's tests, including its quirk of comparing the box's far edge with the *output* size.
  const bool need_h = out_w != src.width() || box[0] != 0 || box[2] != out_w;
  const bool need_v = out_h != src.height() || box[1] != 0 || box[3] != out_h;
  Coeffs ch = precompute_coeffs(src.width(), box[0], box[2], out_w, f);
  Coeffs cv = precompute_coeffs(src.height(), box[1], box[3], out_h, f);
  return two_pass_any(src, out_w, out_h, ch, cv, need_h, need_v);
}

// PIL's ImagingScaleAffine (resize with NEAREST): positions accumulate by repeated addition.
Image resize_nearest(const Image& src, int out_w, int out_h, const ResampleBox& box) {
  const int C = src.channels();
  const double a0 = static_cast<double>(box[2] - box[0]) / out_w;
  const double a4 = static_cast<double>(box[3] - box[1]) / out_h;
  std::vector<int> xin(static_cast<size_t>(out_w), 0);
  int xmin = out_w, xmax = 0;
  double xo = box[0] + a0 * 0.5;
  for (int x = 0; x < out_w; ++x) {
    const int xi = xo < 0.0 ? -1 : static_cast<int>(xo);
    if (xi >= 0 && xi < src.width()) {
      xmax = x + 1;
      if (x < xmin) xmin = x;
      xin[x] = xi;
    }
    xo += a0;
  }
  Image out(out_w, out_h, C);
  double yo = box[1] + a4 * 0.5;
  for (int y = 0; y < out_h; ++y) {
    const int yi = yo < 0.0 ? -1 : static_cast<int>(yo);
    uint8_t* d = out.row(y);
    std::memset(d, 0, out.row_bytes());
    if (yi >= 0 && yi < src.height()) {
      const uint8_t* s = src.row(yi);
      for (int x = xmin; x < xmax; ++x) std::memcpy(d + size_t(x) * C, s + size_t(xin[x]) * C, C);
    }
    yo += a4;
  }
  return out;
}

// PIL Convert.c rgba2rgbA / rgbA2rgba (and the LA ↔ La pair) on the alpha-last layout.
void premultiply(Image& im) {
  const int C = im.channels();
  uint8_t* p = im.data();
  for (size_t i = 0, n = size_t(im.width()) * im.height(); i < n; ++i, p += C) {
    const int a = p[C - 1];
    if (a == 255) continue;
    for (int c = 0; c < C - 1; ++c) {
      if (a == 0) {
        p[c] = 0;
      } else {
        const int t = p[c] * a + 128;
        p[c] = static_cast<uint8_t>(((t >> 8) + t) >> 8);
      }
    }
  }
}
void unpremultiply(Image& im) {
  const int C = im.channels();
  uint8_t* p = im.data();
  for (size_t i = 0, n = size_t(im.width()) * im.height(); i < n; ++i, p += C) {
    const int a = p[C - 1];
    if (a == 255 || a == 0) continue;
    for (int c = 0; c < C - 1; ++c) p[c] = static_cast<uint8_t>(std::min(255, (255 * p[c]) / a));
  }
}

}  // namespace

Image resize_pil(const Image& src, int out_w, int out_h, ResampleFilter filter, std::optional<ResampleBox> box_in) {
  VLM_CHECK(out_w > 0 && out_h > 0, ErrorKind::kInvalidArgument, "resize: output size {}x{} must be positive", out_w,
            out_h);
  VLM_CHECK(!src.empty(), ErrorKind::kInvalidArgument, "resize: source image is empty");
  const int C = src.channels();
  VLM_CHECK(C >= 1 && C <= 4, ErrorKind::kInvalidArgument, "resize: {} channels (expected 1-4)", C);
  const ResampleBox box = box_in.value_or(ResampleBox{0.f, 0.f, float(src.width()), float(src.height())});
  VLM_CHECK(box[0] >= 0 && box[1] >= 0 && box[2] <= src.width() && box[3] <= src.height() && box[2] >= box[0] &&
                box[3] >= box[1],
            ErrorKind::kInvalidArgument, "resize: box ({}, {}, {}, {}) is outside the {}x{} image", box[0], box[1],
            box[2], box[3], src.width(), src.height());
  // Image.resize returns a copy when nothing changes.
  if (out_w == src.width() && out_h == src.height() && !box_in) return src.clone();
  if (filter == ResampleFilter::kNearest) return resize_nearest(src, out_w, out_h, box);

  const Filter f = filter_of(filter);
  const bool alpha = C == 2 || C == 4;
  Image pre;
  const Image* in = &src;
  if (alpha) {  // RGBA → RGBa (LA → La), resize, back
    pre = src.clone();
    premultiply(pre);
    in = &pre;
  }
  Image out = resample_pil_filtered(*in, out_w, out_h, f, box);
  if (alpha) unpremultiply(out);
  return out;
}

// ---- torchvision backend ----------------------------------------------------------------------------
namespace {

// ATen's antialiasing filters (aten/src/ATen/native/cpu/UpSampleKernel.cpp, HelperInterpCubic/Linear::
// aa_filter): Keys a = -0.5 written as cubic_convolution1/2, which rounds differently from PIL's form.
double aten_bicubic_aa(double x) {
  constexpr double A = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2.0) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0.0;
}
double aten_bilinear_aa(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// _compute_index_ranges_int16_weights: double weights (PIL-style bounds, align_corners=False scale
// in/out), then one precision for the whole axis chosen from the largest weight so that weights fit
// int16, rounded half away from zero. The uint8 kernels (AVX2 and generic) sum int16 x uint8 products
// in int32 from 1 << (precision - 1) and saturate (acc >> precision) to uint8.
Coeffs aten_int16_coeffs(int in_size, int out_size, double (*filter)(double), int interp_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double support = scale >= 1.0 ? (interp_size * 0.5) * scale : interp_size * 0.5;
  const int max_interp = static_cast<int>(std::ceil(support)) * 2 + 1;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  std::vector<double> w(size_t(out_size) * max_interp, 0.0);
  Coeffs c;
  c.ksize = max_interp;
  c.bounds.resize(size_t(out_size) * 2);
  double wt_max = 0.0;
  for (int i = 0; i < out_size; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    int64_t xsize = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
    xsize = std::clamp<int64_t>(xsize, 0, max_interp);
    double* wp = &w[size_t(i) * max_interp];
    double total = 0.0;
    for (int64_t j = 0; j < xsize; ++j) {
      wp[j] = filter((static_cast<double>(j + xmin) - center + 0.5) * invscale);
      total += wp[j];
    }
    if (total != 0.0)
      for (int64_t j = 0; j < xsize; ++j) {
        wp[j] /= total;
        wt_max = std::max(wt_max, wp[j]);
      }
    c.bounds[size_t(i) * 2] = static_cast<int>(xmin);
    c.bounds[size_t(i) * 2 + 1] = static_cast<int>(xsize);
  }
  int prec = 0;
  for (prec = 0; prec < 22; ++prec)
    if (static_cast<int>(0.5 + wt_max * (1 << (prec + 1))) >= (1 << 15)) break;
  c.precision = prec;
  c.kk.resize(w.size());
  for (size_t j = 0; j < w.size(); ++j) {
    const double v = w[j] * (1 << prec);
    c.kk[j] = static_cast<int16_t>(v < 0 ? static_cast<int>(-0.5 + v) : static_cast<int>(0.5 + v));
  }
  return c;
}

}  // namespace

Image resize_torchvision(const Image& src, int out_w, int out_h, ResampleFilter filter) {
  VLM_CHECK(out_w > 0 && out_h > 0, ErrorKind::kInvalidArgument, "resize: output size {}x{} must be positive", out_w,
            out_h);
  VLM_CHECK(!src.empty() && src.channels() >= 1 && src.channels() <= 4, ErrorKind::kInvalidArgument,
            "resize: source must be a non-empty 1-4 channel image");
  VLM_CHECK(filter == ResampleFilter::kBilinear || filter == ResampleFilter::kBicubic, ErrorKind::kInvalidArgument,
            "resize (torchvision backend): {} is not available; torchvision antialiased resize offers bilinear and "
            "bicubic",
            resample_filter_name(filter));
  if (out_w == src.width() && out_h == src.height()) return src.clone();
  const bool cubic = filter == ResampleFilter::kBicubic;
  Coeffs ch = aten_int16_coeffs(src.width(), out_w, cubic ? aten_bicubic_aa : aten_bilinear_aa, cubic ? 4 : 2);
  Coeffs cv = aten_int16_coeffs(src.height(), out_h, cubic ? aten_bicubic_aa : aten_bilinear_aa, cubic ? 4 : 2);
  // No premultiplication: torchvision resizes every channel of a tensor alike.
  return two_pass_any(src, out_w, out_h, ch, cv, out_w != src.width(), out_h != src.height());
}

Image center_crop(const Image& src, int out_w, int out_h) {
  VLM_CHECK(out_w > 0 && out_h > 0, ErrorKind::kInvalidArgument, "center_crop: size {}x{} must be positive", out_w,
            out_h);
  const int h = src.height(), w = src.width();
  // Python floor division on possibly negative numbers.
  auto floordiv2 = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  int top = floordiv2(h - out_h), left = floordiv2(w - out_w);
  if (top >= 0 && top + out_h <= h && left >= 0 && left + out_w <= w) {
    Image out(out_w, out_h, src.channels());
    for (int y = 0; y < out_h; ++y)
      std::memcpy(out.row(y), src.row(top + y) + size_t(left) * src.channels(), out.row_bytes());
    return out;
  }
  // transformers pads with zeros to max(crop, orig) (centred, ceil of half the excess) and crops.
  const int nh = std::max(out_h, h), nw = std::max(out_w, w);
  const int top_pad = (nh - h + 1) / 2, left_pad = (nw - w + 1) / 2;
  Image padded = pad_image(src, nw, nh, left_pad, top_pad);
  top += top_pad;
  left += left_pad;
  const int y0 = std::max(0, top), y1 = std::min(nh, top + out_h);
  const int x0 = std::max(0, left), x1 = std::min(nw, left + out_w);
  Image out(x1 - x0, y1 - y0, src.channels());
  for (int y = y0; y < y1; ++y)
    std::memcpy(out.row(y - y0), padded.row(y) + size_t(x0) * src.channels(), out.row_bytes());
  return out;
}

Image pad_image(const Image& src, int out_w, int out_h, int left, int top, std::array<uint8_t, 4> fill) {
  const int C = src.channels();
  VLM_CHECK(left >= 0 && top >= 0 && left + src.width() <= out_w && top + src.height() <= out_h,
            ErrorKind::kInvalidArgument, "pad_image: {}x{} at ({}, {}) does not fit in {}x{}", src.width(),
            src.height(), left, top, out_w, out_h);
  Image out(out_w, out_h, C);
  for (int y = 0; y < out_h; ++y) {
    uint8_t* d = out.row(y);
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < C; ++c) d[size_t(x) * C + c] = fill[c];
  }
  for (int y = 0; y < src.height(); ++y)
    std::memcpy(out.row(top + y) + size_t(left) * C, src.row(y), src.row_bytes());
  return out;
}

Image expand_to_square(const Image& src, std::array<uint8_t, 4> fill) {
  const int s = std::max(src.width(), src.height());
  if (src.width() == src.height()) return src.clone();
  return pad_image(src, s, s, (s - src.width()) / 2, (s - src.height()) / 2, fill);
}

namespace {

// out[c] plane of [C, H, W] f32 = lut[c * 256 + u8]; rows split across the pool.
Tensor chw_from_lut(const Image& src, const std::vector<float>& lut) {
  const int C = src.channels(), H = src.height(), W = src.width();
  Tensor t = Tensor::empty({C, H, W}, DType::kF32, MemCategory::kImage);
  float* out = t.data<float>();
  const size_t plane = size_t(H) * W;
  ThreadPool::global().parallel_for(H, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* s = src.row(static_cast<int>(y));
      for (int c = 0; c < C; ++c) {
        float* d = out + c * plane + size_t(y) * W;
        const float* l = &lut[size_t(c) * 256];
        for (int x = 0; x < W; ++x) d[x] = l[s[size_t(x) * C + c]];
      }
    }
  }, 16);
  return t;
}

// float32(double(v) * scale): numpy's float64 multiply followed by astype(float32).
float rescaled(int v, double scale) { return static_cast<float>(static_cast<double>(v) * scale); }

}  // namespace

Tensor rescale_to_chw(const Image& src, double scale) {
  std::vector<float> lut(size_t(src.channels()) * 256);
  for (int c = 0; c < src.channels(); ++c)
    for (int v = 0; v < 256; ++v) lut[size_t(c) * 256 + v] = rescaled(v, scale);
  return chw_from_lut(src, lut);
}

void normalize_chw(Tensor& chw, const std::vector<float>& mean, const std::vector<float>& std) {
  VLM_CHECK(chw.ndim() == 3 && chw.dtype() == DType::kF32 && chw.is_contiguous(), ErrorKind::kInvalidArgument,
            "normalize: expected a contiguous [c, h, w] f32 tensor, got {}", chw.describe());
  const int64_t C = chw.dim(0);
  VLM_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
            ErrorKind::kInvalidArgument, "normalize: {} channels but {} means and {} stds", C, mean.size(), std.size());
  const int64_t plane = chw.dim(1) * chw.dim(2);
  float* p = chw.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    VLM_CHECK(std[c] != 0.0f, ErrorKind::kInvalidArgument, "normalize: std[{}] is zero", c);
    const float m = mean[c], s = std[c];
    float* q = p + c * plane;
    for (int64_t i = 0; i < plane; ++i) q[i] = (q[i] - m) / s;  // float32 subtract and divide, like numpy
  }
}

Tensor to_normalized_chw(const Image& src, const std::vector<float>& mean, const std::vector<float>& std, double scale) {
  const int C = src.channels();
  VLM_CHECK(static_cast<int>(mean.size()) == C && static_cast<int>(std.size()) == C, ErrorKind::kInvalidArgument,
            "normalize: {} channels but {} means and {} stds", C, mean.size(), std.size());
  // Each output value depends only on (channel, u8 value), so a 256-entry table per channel holds the
  // exact float32 results of rescale followed by normalize.
  std::vector<float> lut(size_t(C) * 256);
  for (int c = 0; c < C; ++c) {
    VLM_CHECK(std[c] != 0.0f, ErrorKind::kInvalidArgument, "normalize: std[{}] is zero", c);
    for (int v = 0; v < 256; ++v) lut[size_t(c) * 256 + v] = (rescaled(v, scale) - mean[c]) / std[c];
  }
  return chw_from_lut(src, lut);
}

Tensor to_normalized_chw_torchvision(const Image& src, const std::vector<float>& mean, const std::vector<float>& std,
                                     double rescale_factor) {
  const int C = src.channels();
  VLM_CHECK(static_cast<int>(mean.size()) == C && static_cast<int>(std.size()) == C, ErrorKind::kInvalidArgument,
            "normalize: {} channels but {} means and {} stds", C, mean.size(), std.size());
  VLM_CHECK(rescale_factor != 0.0, ErrorKind::kInvalidArgument, "normalize: rescale factor is zero");
  // transformers' fast processors fuse the two steps: torch.tensor(mean) (float32) * (1.0 / rescale_factor),
  // likewise std, then F.normalize on the float32 image: (x - mean') / std' in float32.
  const float inv = static_cast<float>(1.0 / rescale_factor);
  std::vector<float> lut(size_t(C) * 256);
  for (int c = 0; c < C; ++c) {
    const float m = mean[c] * inv, s = std[c] * inv;
    VLM_CHECK(s != 0.0f, ErrorKind::kInvalidArgument, "normalize: std[{}] is zero", c);
    for (int v = 0; v < 256; ++v) lut[size_t(c) * 256 + v] = (static_cast<float>(v) - m) / s;
  }
  return chw_from_lut(src, lut);
}

}  // namespace vlm
