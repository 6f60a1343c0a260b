// The generation loop: chunked prefill, decode, stop conditions, streaming, thinking budget,
// timings and memory (semantics in generator.h).
#include "generate/generator.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "generate/sampler.h"
#include "io/config.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

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

// Where a multimodal prompt may be cut into prefill chunks: cut_ok[i] (0 < i < n) is false when a
// bidirectional group has positions on both sides of the cut between i-1 and i (its earlier
// positions must see its later ones, so the whole group has to be in the KV cache of one forward).
std::vector<bool> allowed_cuts(const std::vector<int32_t>& groups, int64_t n) {
  std::vector<bool> cut_ok(static_cast<size_t>(n + 1), true);
  if (groups.empty()) return cut_ok;
  std::map<int32_t, std::pair<int64_t, int64_t>> span;  // group id -> [first, last] position
  for (int64_t i = 0; i < n; ++i) {
    const int32_t g = groups[static_cast<size_t>(i)];
    if (g == 0) continue;
    auto [it, fresh] = span.try_emplace(g, i, i);
    if (!fresh) it->second.second = i;
  }
  for (const auto& [g, s] : span)
    for (int64_t i = s.first + 1; i <= s.second; ++i) cut_ok[static_cast<size_t>(i)] = false;
  return cut_ok;
}

// Prefill chunks [begin, end) for a multimodal prompt of n positions: the text path's shape (chunks
// of `step` over all but the last position, then the last one alone), with every cut moved so that
// no bidirectional group is split — back to the group's start when that keeps the chunk non-empty,
// else forward past the group's end (a group longer than `step` is fed whole).
std::vector<std::pair<int64_t, int64_t>> multimodal_chunks(const std::vector<int32_t>& groups, int64_t n,
                                                           int64_t step) {
  const std::vector<bool> ok = allowed_cuts(groups, n);
  int64_t last = n - 1;  // start of the final chunk (the text path feeds the last token alone)
  while (last > 0 && !ok[static_cast<size_t>(last)]) --last;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  int64_t done = 0;
  while (done < last) {
    int64_t end = std::min(done + step, last);
    int64_t back = end;
    while (back > done && !ok[static_cast<size_t>(back)]) --back;
    if (back > done) {
      end = back;
    } else {
      while (end < last && !ok[static_cast<size_t>(end)]) ++end;
    }
    chunks.emplace_back(done, end);
    done = end;
  }
  chunks.emplace_back(last, n);
  return chunks;
}

void check_multimodal(const MultimodalPrompt& mm, int64_t n, int64_t hidden) {
  VLM_CHECK(mm.embeds.defined() && mm.embeds.dtype() == DType::kF32 && mm.embeds.ndim() == 2 &&
                mm.embeds.dim(0) == n && mm.embeds.dim(1) == hidden && mm.embeds.is_contiguous(),
            ErrorKind::kInvalidArgument,
            "generate: the multimodal prompt's embeds must be contiguous [{} prompt tokens, {} hidden] f32, got {}", n,
            hidden,
            mm.embeds.defined() ? mm.embeds.describe() : std::string("none"));
  VLM_CHECK(mm.dims == 1 || mm.dims == 3, ErrorKind::kInvalidArgument,
            "generate: multimodal positions must have 1 or 3 rows (M-RoPE), got {}", mm.dims);
  VLM_CHECK(static_cast<int64_t>(mm.positions.size()) == mm.dims * n, ErrorKind::kInvalidArgument,
            "generate: multimodal positions hold {} values, expected {} ({} row(s) x {} tokens)",
            mm.positions.size(), mm.dims * n, mm.dims, n);
  VLM_CHECK(mm.groups.empty() || static_cast<int64_t>(mm.groups.size()) == n, ErrorKind::kInvalidArgument,
            "generate: multimodal groups hold {} values, expected none or one per prompt token ({})", mm.groups.size(),
            n);
}

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

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "auto") return ops::cuda::available() ? Device::kCuda : Device::kCpu;
  if (name == "cuda") {
    VLM_CHECK(ops::cuda::available(), ErrorKind::kUnsupported, "--device cuda: {}", cuda_unavailable_reason());
    return Device::kCuda;
  }
  throw_error(ErrorKind::kInvalidArgument, "--device must be cpu, cuda or auto, got '{}'", name);
}

KVCacheOptions kv_cache_options(const GenerationParams& p) {
  KVCacheOptions o;
  o.max_kv_size = p.max_kv_size;
  o.kv_bits = p.kv_bits;
  o.kv_group_size = p.kv_group_size;
  o.quantized_kv_start = p.quantized_kv_start;
  return o;
}

bool queued_decode(const LanguageModel& model) {
  const char* env = std::getenv("VLMCHECK_QUEUED_DECODE");
  if (env != nullptr && *env != '\0') return std::string(env) != "0";
  return model.queues_ahead();
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
  const MultimodalPrompt* mm = request.multimodal;
  if (mm) check_multimodal(*mm, static_cast<int64_t>(prompt.size()), hidden);
  // A multimodal prompt's K/V depend on the images, not only on the ids: never reuse or update a prompt cache.
  if (mm) prompt_cache = nullptr;

  MemoryTracker::instance().reset_peak_all();
  const Clock::time_point t_start = Clock::now();

  GenerationResult res;
  res.times = request.times;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());
  res.seed = params.seed ? *params.seed : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

  // ---- cache ----
  const std::vector<LayerCacheInfo> layout = model.cache_layout();
  KVCacheOptions kv_opts = kv_cache_options(params);
  kv_opts.device = model.device();  // K/V live where the decoder runs
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
  // Multimodal prompts bring their own embeddings; the buffer then only serves decode (one token).
  Tensor embeds = Tensor::empty({mm ? 1 : step, hidden}, DType::kF32, MemCategory::kScratch);
  Tensor logits = Tensor::empty({vocab}, DType::kF32, MemCategory::kScratch);
  std::vector<int64_t> positions(static_cast<size_t>(mm ? 3 : step));
  const ops::AttentionMask causal{};
  // Greedy generation asks the model for the argmax only (taken on its device); a chain of built-in
  // processors and sampler asks it for the sampled id (ops::sample on its device, with the chain's
  // next uniform, so a seed gives the same tokens on every device); any other chain (a LogitsProcessor
  // or Sampler from the C++ API) gets the last position's logits in `logits`. next_token() is the one
  // place that reads any of them. `last` marks the forward whose logits pick the next token; earlier
  // prefill chunks only fill the cache (and draw nothing).
  const bool greedy = chain.greedy();
  const bool sample_on_model = !greedy && chain.builtin();
  int32_t model_id = 0;
  // Penalties see the prompt followed by the generated ids.
  std::vector<int32_t> history = prompt;
  auto run = [&](Embeds x, int64_t n, const Positions& pos, const ops::AttentionMask& mask, bool last) {
    if (greedy || (sample_on_model && !last))
      model_id = model.forward_argmax(x, n, pos, *cache, mask);
    else if (sample_on_model)
      model_id = model.forward_sample(x, n, pos, *cache, mask, chain.spec(), history.data(),
                                      static_cast<int64_t>(history.size()), chain.draw());
    else
      model.forward(x, n, pos, *cache, mask, logits.data<float>(), false);
  };
  auto next_token = [&]() {
    return greedy || sample_on_model ? model_id : chain.next(history, logits.data<float>(), vocab);
  };

  // Feeds ids[0, n) at the cache's current offset.
  auto feed = [&](const int32_t* ids, int64_t n, bool last) {
    const int64_t base = cache->offset();
    model.embed(ids, n, embeds.data<float>());
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = base + i;
    run(embeds.data<float>(), n, Positions{positions.data(), n, 1}, causal, last);
    if (prompt_cache) prompt_cache->record(ids, n);
  };

  // Multimodal prefill of prompt positions [begin, end): the prompt's own embeddings, positions (1 or
  // 3 rows, sliced per chunk) and bidirectional groups (indexed by absolute position, which equals the
  // prompt index since the cache starts empty).
  std::vector<int64_t> chunk_positions;
  auto feed_multimodal = [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin, total = res.prompt_tokens;
    const int64_t* pos = mm->positions.data() + begin;
    if (mm->dims == 3) {
      chunk_positions.resize(static_cast<size_t>(3 * n));
      for (int r = 0; r < 3; ++r)
        std::copy_n(mm->positions.data() + r * total + begin, n, chunk_positions.data() + r * n);
      pos = chunk_positions.data();
    }
    ops::AttentionMask mask{};
    if (!mm->groups.empty()) {
      mask.group_of_position = mm->groups.data();
      mask.group_positions = total;
    }
    run(Embeds{mm->embeds.data<float>() + begin * hidden, mm->embeds.device()}, n, Positions{pos, n, mm->dims}, mask,
        end == total);
  };
  // Decode positions continue at (tokens so far + rope_delta), the same value in every RoPE row.
  auto feed_decode_multimodal = [&](int32_t id) {
    const int64_t p = cache->offset() + mm->rope_delta;
    model.embed(&id, 1, embeds.data<float>());
    for (int r = 0; r < mm->dims; ++r) positions[static_cast<size_t>(r)] = p;
    run(embeds.data<float>(), 1, Positions{positions.data(), 1, mm->dims}, causal, true);
  };

  // ---- prefill: all remaining prompt tokens but the last in chunks, then the last one ----
  const Clock::time_point t_prefill = Clock::now();
  if (mm) {
    for (const auto& [begin, end] : multimodal_chunks(mm->groups, res.prompt_tokens, step)) feed_multimodal(begin, end);
  } else {
    int64_t done = cached;
    while (res.prompt_tokens - done > 1) {
      int64_t n = std::min(step, res.prompt_tokens - done - 1);
      feed(prompt.data() + done, n, false);
      done += n;
    }
    feed(prompt.data() + done, 1, true);
  }

  int32_t token = next_token();
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
  // Decode on a device that runs asynchronously is queued one step ahead of the host
  // (LanguageModel::queue_greedy / queue_sample): step n + 1 is queued before the host reads token n + 1
  // from step n, so the device goes on while the host handles a token. The same tokens as the loop below
  // (sampled steps draw their u in the same order); a stop after token n (EOS, the streaming callback)
  // leaves one speculative step that fed token n, whose K/V entry the cache keeps and whose result is not
  // read into the output. Greedy, or the built-in chain on the model without penalties (they read the
  // history); not with thinking budgets (they replace tokens the next step would already have fed) nor
  // with a prompt cache (it must hold exactly the fed ids). VLMCHECK_QUEUED_DECODE=1 forces it (tests run
  // it on the CPU), =0 turns it off.
  const bool queued = (greedy || (sample_on_model && !chain.spec().reads_history())) && !thinking && !prompt_cache &&
                      queued_decode(model);
  auto queue_next = [&] {  // the step after the last queued one, at the cache's next position
    Positions pos{positions.data(), 1, 1};
    if (mm) {
      const int64_t p = cache->offset() + mm->rope_delta;
      for (int r = 0; r < mm->dims; ++r) positions[static_cast<size_t>(r)] = p;
      pos.dims = mm->dims;
    } else {
      positions[0] = cache->offset();
    }
    if (greedy)
      model.queue_greedy(pos, *cache);
    else
      model.queue_sample(pos, *cache, chain.spec(), chain.draw());
  };
  int64_t unread = 0;  // queued steps whose token was not read
  if (queued) model.begin_queued(token);
  for (int64_t n = 0; n < params.max_tokens; ++n) {
    if (queued && n > 0) {
      if (n + 1 < params.max_tokens) {  // step n, fed token n before the host has seen it
        queue_next();
        ++unread;
      }
      token = model.next_queued();  // token n, from step n - 1
      --unread;
    }
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
    if (queued) {
      if (n == 0) {
        queue_next();
        ++unread;
      }
      continue;
    }
    if (mm)
      feed_decode_multimodal(token);
    else
      feed(&token, 1, true);
    int32_t sampled = next_token();
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
  while (unread > 0) {  // a speculative step past a stop: let it finish before the cache goes
    model.next_queued();
    --unread;
  }
  res.generation_tokens = static_cast<int64_t>(res.tokens.size());
  res.generation_tps = res.times.decode_s > 0 ? static_cast<double>(res.generation_tokens) / res.times.decode_s : 0;

  res.peak_host_bytes = MemoryTracker::instance().snapshot(MemDevice::kHost).peak;
  const MemorySnapshot gpu = MemoryTracker::instance().snapshot(MemDevice::kGpu);
  res.peak_gpu_bytes = gpu.peak;
  res.gpu_active_bytes = gpu.active;
  res.gpu_cache_bytes = gpu.cache;
  res.device = device_name(model.device());
  res.peak_rss_bytes = process_memory().peak_rss;
  return res;
}

}  // namespace vlm
