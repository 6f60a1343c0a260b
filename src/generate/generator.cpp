// The generation loop: chunked prefill, decode, stop conditions, streaming, thinking budget,
// timings and memory (semantics in generator.h).
#include "generate/generator.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "generate/sampler.h"
#include "io/config.h"

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// mlx-vlm's ThinkingBudgetCriteria: observes every emitted token and, once the budget is spent,
// queues "\n" + end token to replace the next sampled tokens.
class ThinkingBudget {
 public:
  ThinkingBudget(const Tokenizer& tok, const GenerationParams& p, const std::vector<int32_t>& prompt)
      : budget_(*p.thinking_budget) {
    auto last_id = [&](const std::string& s) -> std::optional<int32_t> {
      auto ids = tok.encode(s, false);
      if (ids.empty()) return std::nullopt;
      return ids.back();
    };
    auto end = last_id(p.thinking_end_token);
    VLM_CHECK(end.has_value(), ErrorKind::kInvalidArgument, "thinking_end_token '{}' encodes to no token",
              p.thinking_end_token);
    end_id_ = *end;
    start_id_ = last_id(p.thinking_start_token);
    if (auto nl = last_id("\n")) forced_.push_back(*nl);
    forced_.push_back(end_id_);
    // The prompt opened a thinking block when its last start token is not followed by an end token.
    if (start_id_) {
      auto s = std::find(prompt.rbegin(), prompt.rend(), *start_id_);
      auto e = std::find(prompt.rbegin(), prompt.rend(), end_id_);
      in_thinking_ = s != prompt.rend() && (e == prompt.rend() || s < e);
    }
  }

  // Called with each emitted token; returns the token that must replace the next draw, if any.
  std::optional<int32_t> observe(int32_t id) {
    if (start_id_ && id == *start_id_) {
      in_thinking_ = true;
      return std::nullopt;
    }
    if (id == end_id_) {
      in_thinking_ = false;
      exceeded_ = false;
      forced_index_ = 0;
      return std::nullopt;
    }
    if (in_thinking_ && ++count_ > budget_) exceeded_ = true;
    if (exceeded_ && forced_index_ < forced_.size()) return forced_[forced_index_++];
    return std::nullopt;
  }

 private:
  int64_t budget_;
  int32_t end_id_ = -1;
  std::optional<int32_t> start_id_;
  std::vector<int32_t> forced_;
  size_t forced_index_ = 0;
  bool in_thinking_ = false, exceeded_ = false;
  int64_t count_ = 0;
};

void add_unique(std::vector<int32_t>& ids, int64_t id) {
  if (id >= 0 && id <= INT32_MAX && std::find(ids.begin(), ids.end(), static_cast<int32_t>(id)) == ids.end())
    ids.push_back(static_cast<int32_t>(id));
}

}  // namespace

std::vector<int32_t> collect_eos_ids(const LoadedModel& model, const Tokenizer& tokenizer,
                                     const std::vector<int32_t>& extra_ids) {
  std::vector<int32_t> ids;
  for (int64_t id : model.config.eos_token_ids) add_unique(ids, id);
  GenerationConfig gen = GenerationConfig::load_if_present(model.folder + "/generation_config.json");
  for (int64_t id : gen.eos_token_ids) add_unique(ids, id);
  if (auto eos = tokenizer.eos_token())
    if (auto id = tokenizer.token_to_id(*eos)) add_unique(ids, *id);
  for (int32_t id : extra_ids) add_unique(ids, id);
  return ids;
}

KVCacheOptions kv_cache_options(const GenerationParams& p) {
  KVCacheOptions o;
  o.max_kv_size = p.max_kv_size;
  o.kv_bits = p.kv_bits;
  o.kv_group_size = p.kv_group_size;
  o.quantized_kv_start = p.quantized_kv_start;
  return o;
}

GenerationResult generate(LanguageModel& model, const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids,
                          const GenerateRequest& request, const GenerationParams& params,
                          const StreamCallback& on_piece, PromptCache* prompt_cache) {
  params.validate();
  const std::vector<int32_t>& prompt = request.prompt_ids;
  VLM_CHECK(!prompt.empty(), ErrorKind::kInvalidArgument, "generate: the prompt has no tokens");
  const int64_t vocab = model.vocab_size(), hidden = model.hidden_size();
  for (int32_t id : prompt)
    VLM_CHECK(id >= 0 && id < vocab, ErrorKind::kInvalidArgument,
              "generate: prompt token id {} outside the model's vocabulary [0, {})", id, vocab);

  MemoryTracker::instance().reset_peak_all();
  const Clock::time_point t_start = Clock::now();

  GenerationResult res;
  res.times = request.times;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());
  res.seed = params.seed ? *params.seed : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

  // ---- cache ----
  const std::vector<LayerCacheInfo> layout = model.cache_layout();
  const KVCacheOptions kv_opts = kv_cache_options(params);
  if (max_kv_size_ignored(layout, kv_opts))
    res.warnings.push_back(fmt::format(
        "max_kv_size {} ignored: this model has sliding-window layers and uses its own cache layout (as mlx-vlm)",
        *params.max_kv_size));
  std::unique_ptr<LayeredKVCache> own_cache;
  LayeredKVCache* cache = nullptr;
  int64_t cached = 0;
  if (prompt_cache) {
    cached = prompt_cache->prepare(layout, kv_opts, prompt);
    cache = &prompt_cache->cache();
  } else {
    own_cache = make_layered_kv_cache(layout, kv_opts);
    cache = own_cache.get();
  }
  res.cached_prompt_tokens = cached;
  res.kv_cache = cache->describe();

  SamplingChain chain(params, res.seed);
  std::optional<ThinkingBudget> thinking;
  if (params.enable_thinking && params.thinking_budget) thinking.emplace(tokenizer, params, prompt);

  // ---- buffers ----
  const int64_t step = std::min<int64_t>(params.prefill_step_size, std::max<int64_t>(1, res.prompt_tokens));
  Tensor embeds = Tensor::empty({step, hidden}, DType::kF32, MemCategory::kScratch);
  Tensor logits = Tensor::empty({vocab}, DType::kF32, MemCategory::kScratch);
  std::vector<int64_t> positions(static_cast<size_t>(step));
  const ops::AttentionMask causal{};

  // Feeds ids[0, n) at the cache's current offset; logits of the last one land in `logits`.
  auto feed = [&](const int32_t* ids, int64_t n) {
    const int64_t base = cache->offset();
    model.embed(ids, n, embeds.data<float>());
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = base + i;
    Positions pos{positions.data(), n, 1};
    model.forward(embeds.data<float>(), n, pos, *cache, causal, logits.data<float>(), false);
    if (prompt_cache) prompt_cache->record(ids, n);
  };

  // ---- prefill: all remaining prompt tokens but the last in chunks, then the last one ----
  const Clock::time_point t_prefill = Clock::now();
  int64_t done = cached;
  while (res.prompt_tokens - done > 1) {
    int64_t n = std::min(step, res.prompt_tokens - done - 1);
    feed(prompt.data() + done, n);
    done += n;
  }
  feed(prompt.data() + done, 1);

  std::vector<int32_t> history = prompt;
  int32_t token = chain.next(history, logits.data<float>(), vocab);
  res.times.prefill_s = seconds_since(t_prefill);
  const double pre_stage_s = request.times.tokenize_s + request.times.image_preprocess_s + request.times.vision_encode_s;
  res.ttft_s = pre_stage_s + seconds_since(t_start);
  res.prompt_tps = res.times.prefill_s > 0 ? static_cast<double>(res.prompt_tokens - cached) / res.times.prefill_s : 0;

  // ---- decode ----
  const Clock::time_point t_decode = Clock::now();
  StreamingDecoder decoder(tokenizer, params.skip_special_tokens);
  res.finish_reason = "length";
  auto emit = [&](const std::string& piece, int32_t id) -> bool {
    res.text += piece;
    if (on_piece && !piece.empty()) return on_piece(piece, id);
    return true;
  };
  for (int64_t n = 0; n < params.max_tokens; ++n) {
    if (std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end()) {
      res.finish_reason = "stop";
      break;
    }
    res.tokens.push_back(token);
    history.push_back(token);
    bool keep_going = emit(decoder.push(token), token);
    std::optional<int32_t> forced = thinking ? thinking->observe(token) : std::nullopt;
    if (!keep_going) {
      res.finish_reason = "stop";
      break;
    }
    if (n + 1 == params.max_tokens) break;
    feed(&token, 1);
    int32_t sampled = chain.next(history, logits.data<float>(), vocab);
    if (forced) {
      token = *forced;
      ++res.thinking_tokens_forced;
    } else {
      token = sampled;
    }
  }
  std::string tail = decoder.flush();
  if (!tail.empty()) {
    res.text += tail;
    if (on_piece) on_piece(tail, res.tokens.empty() ? -1 : res.tokens.back());
  }
  res.times.decode_s = seconds_since(t_decode);
  res.generation_tokens = static_cast<int64_t>(res.tokens.size());
  res.generation_tps = res.times.decode_s > 0 ? static_cast<double>(res.generation_tokens) / res.times.decode_s : 0;

  res.peak_host_bytes = MemoryTracker::instance().snapshot(MemDevice::kHost).peak;
  res.peak_gpu_bytes = MemoryTracker::instance().snapshot(MemDevice::kGpu).peak;
  res.peak_rss_bytes = process_memory().peak_rss;
  return res;
}

}  // namespace vlm
