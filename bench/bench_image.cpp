// Image-path benchmark: decode + PIL-exact resize + rescale/normalise of a 12 MP JPEG (made here with
// TurboJPEG from a synthetic photo-like pattern, 4:2:0, quality 92), into
//   (a) a 512x512 tile (SmolVLM-like; LANCZOS as Idefics3's processor uses, and BICUBIC), and
//   (b) the Qwen2.5-VL smart_resize size (factor 28, max_pixels 12845056 → 4004x2996, BICUBIC), with
//       both the PIL-exact resize and the torchvision-backend one transformers 5 uses by default.
// Prints per stage: median, min and max wall time over N runs after one warm-up, the raw samples (ms),
// and the process CPU time (all threads), which stays meaningful when other jobs share the cores.
//
// usage: bench_image [runs=7] [threads=0 (pool default)]
#include <turbojpeg.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "image/image.h"
#include "image/resample.h"

namespace {

using Clock = std::chrono::steady_clock;

std::vector<uint8_t> make_jpeg(int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> noise(-12, 12);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      const double fx = double(x) / w, fy = double(y) / h;
      p[0] = uint8_t(std::clamp(int(127 + 100 * std::sin(fx * 17 + fy * 5)) + noise(rng), 0, 255));
      p[1] = uint8_t(std::clamp(int(255 * fy) + noise(rng), 0, 255));
      p[2] = uint8_t(std::clamp(((x / 64 + y / 64) & 1) * 160 + 40 + noise(rng), 0, 255));
    }
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 92, 0) != 0) {
    std::fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
    std::exit(1);
  }
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

struct Stats {
  std::string name;
  std::vector<double> ms;   // wall
  std::vector<double> cpu;  // process CPU time, all threads
};

void report(const Stats& s) {
  std::vector<double> v = s.ms;
  std::sort(v.begin(), v.end());
  const double med = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  std::printf("%-44s median %8.2f ms  min %8.2f  max %8.2f  samples [", s.name.c_str(), med, v.front(), v.back());
  for (size_t i = 0; i < s.ms.size(); ++i) std::printf("%s%.2f", i ? ", " : "", s.ms[i]);
  std::printf("]\n");
  std::vector<double> c = s.cpu;
  std::sort(c.begin(), c.end());
  std::printf("%-44s   cpu median %8.2f ms  min %8.2f\n", "", c[c.size() / 2], c.front());
}

double cpu_now_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Wall time of f; its process CPU time (all threads) is added to *cpu_ms. CPU time stays meaningful
// when other jobs share the cores, wall time does not.
double time_ms(const std::function<void()>& f, double* cpu_ms) {
  const double c0 = cpu_now_ms();
  const auto t0 = Clock::now();
  f();
  const double wall = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  *cpu_ms = cpu_now_ms() - c0;
  return wall;
}

// Qwen2-VL smart_resize (transformers): round each side to the factor, then rescale into the
// [min_pixels, max_pixels] band keeping multiples of the factor.
std::pair<int, int> smart_resize(int h, int w, int factor, int64_t min_pixels, int64_t max_pixels) {
  int hb = std::max<int>(factor, int(std::nearbyint(double(h) / factor)) * factor);
  int wb = std::max<int>(factor, int(std::nearbyint(double(w) / factor)) * factor);
  if (int64_t(hb) * wb > max_pixels) {
    const double beta = std::sqrt(double(h) * w / double(max_pixels));
    hb = std::max<int>(factor, int(std::floor(h / beta / factor)) * factor);
    wb = std::max<int>(factor, int(std::floor(w / beta / factor)) * factor);
  } else if (int64_t(hb) * wb < min_pixels) {
    const double beta = std::sqrt(double(min_pixels) / (double(h) * w));
    hb = int(std::ceil(h * beta / factor)) * factor;
    wb = int(std::ceil(w * beta / factor)) * factor;
  }
  return {hb, wb};
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
  if (threads > 0) vlm::ThreadPool::set_global_threads(threads);
  const int W = 4000, H = 3000;
  const std::vector<uint8_t> jpeg = make_jpeg(W, H);
  std::printf("bench_image: %dx%d JPEG (%.1f MP, %zu bytes), %d runs + 1 warm-up, %d threads\n", W, H, W * H / 1e6,
              jpeg.size(), runs, vlm::ThreadPool::global().num_threads());

  const std::vector<float> mean = {0.5f, 0.5f, 0.5f}, stdv = {0.5f, 0.5f, 0.5f};  // SigLIP / Idefics3
  const std::vector<float> qmean = {0.48145466f, 0.4578275f, 0.40821073f};       // Qwen2-VL (CLIP stats)
  const std::vector<float> qstd = {0.26862954f, 0.26130258f, 0.27577711f};
  const auto [qh, qw] = smart_resize(H, W, 28, 56 * 56, 12845056);

  Stats decode{"decode (TurboJPEG, PIL-identical)", {}, {}};
  Stats tile_lz{"resize 512x512 LANCZOS", {}, {}}, tile_bc{"resize 512x512 BICUBIC", {}, {}};
  Stats tile_norm{"rescale+normalize 512x512 -> [3,512,512]", {}, {}};
  Stats qwen_rs{"resize " + std::to_string(qw) + "x" + std::to_string(qh) + " BICUBIC (Qwen2.5-VL)", {}, {}};
  Stats qwen_tv{"resize " + std::to_string(qw) + "x" + std::to_string(qh) + " BICUBIC torchvision backend", {}, {}};
  Stats qwen_norm{"rescale+normalize " + std::to_string(qw) + "x" + std::to_string(qh), {}, {}};
  Stats total_tile{"total: decode+512 LANCZOS+normalize", {}, {}}, total_qwen{"total: decode+Qwen resize+normalize", {}, {}};

  for (int r = 0; r <= runs; ++r) {
    vlm::DecodedImage d;
    vlm::Image a, b, q;
    vlm::Tensor ta, tq;
    double c[7];
    const double t_dec = time_ms([&] { d = vlm::decode_image_bytes(jpeg, "bench.jpg"); }, &c[0]);
    const double t_lz = time_ms([&] { a = vlm::resize_pil(d.image, 512, 512, vlm::ResampleFilter::kLanczos); }, &c[1]);
    const double t_bc = time_ms([&] { b = vlm::resize_pil(d.image, 512, 512, vlm::ResampleFilter::kBicubic); }, &c[2]);
    const double t_an = time_ms([&] { ta = vlm::to_normalized_chw(a, mean, stdv); }, &c[3]);
    const double t_q = time_ms([&] { q = vlm::resize_pil(d.image, qw, qh, vlm::ResampleFilter::kBicubic); }, &c[4]);
    const double t_qn = time_ms([&] { tq = vlm::to_normalized_chw(q, qmean, qstd); }, &c[5]);
    const double t_tv = time_ms([&] { q = vlm::resize_torchvision(d.image, qw, qh, vlm::ResampleFilter::kBicubic); }, &c[6]);
    if (r == 0) continue;  // warm-up
    const double wall[7] = {t_dec, t_lz, t_bc, t_an, t_q, t_qn, t_tv};
    Stats* per[7] = {&decode, &tile_lz, &tile_bc, &tile_norm, &qwen_rs, &qwen_norm, &qwen_tv};
    for (int i = 0; i < 7; ++i) {
      per[i]->ms.push_back(wall[i]);
      per[i]->cpu.push_back(c[i]);
    }
    total_tile.ms.push_back(t_dec + t_lz + t_an);
    total_tile.cpu.push_back(c[0] + c[1] + c[3]);
    total_qwen.ms.push_back(t_dec + t_q + t_qn);
    total_qwen.cpu.push_back(c[0] + c[4] + c[5]);
  }
  for (const Stats* s : {&decode, &tile_lz, &tile_bc, &tile_norm, &qwen_rs, &qwen_tv, &qwen_norm, &total_tile, &total_qwen})
    report(*s);
  return 0;
}
