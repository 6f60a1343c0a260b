// Synthetic checkpoints of real shapes and the bench protocol. Weights are uniform random in
// ±0.05 (norm weights 1), so activations stay finite through any depth; the content does not matter
// for speed, only the bytes and the shapes do. VLM shapes add the real model's vision tower and projector
// (same rule) with the configs, tokenizer and chat template the loaders and prepare_prompt read.
#include "generate/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <turbojpeg.h>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/quantize.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "generate/generator.h"
#include "generate/kv_cache.h"
#include "generate/prompt.h"
#include "io/safetensors_writer.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "kernels/probes.h"
#include "models/registry.h"
#include "text/tokenizer.h"

namespace vlm {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

Json llama_like(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, int64_t vocab, bool tied,
                double theta, double eps) {
  return Json{{"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv},
              {"vocab_size", vocab},
              {"tie_word_embeddings", tied},
              {"rope_theta", theta},
              {"rms_norm_eps", eps},
              {"max_position_embeddings", 32768},
              {"hidden_act", "silu"}};
}

// Gemma 3's text config (older Hub layout: sliding_window_pattern + rope_local_base_freq).
Json gemma3_like(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, int64_t head_dim,
                 int64_t vocab, int64_t window, int64_t pattern) {
  return Json{{"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv},
              {"head_dim", head_dim},
              {"query_pre_attn_scalar", head_dim},
              {"vocab_size", vocab},
              {"tie_word_embeddings", true},
              {"sliding_window", window},
              {"sliding_window_pattern", pattern},
              {"rope_theta", 1000000.0},
              {"rope_local_base_freq", 10000.0},
              {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}},
              {"rms_norm_eps", 1e-6},
              {"max_position_embeddings", 131072},
              {"hidden_activation", "gelu_pytorch_tanh"}};
}

// The public vision_config of Qwen2.5-VL-3B/7B-Instruct (they differ in out_hidden_size only).
Json qwen25_vl_vision(int64_t out_hidden) {
  return Json{{"depth", 32},
              {"hidden_act", "silu"},
              {"hidden_size", 1280},
              {"intermediate_size", 3420},
              {"num_heads", 16},
              {"in_chans", 3},
              {"out_hidden_size", out_hidden},
              {"patch_size", 14},
              {"spatial_merge_size", 2},
              {"spatial_patch_size", 14},
              {"window_size", 112},
              {"fullatt_block_indexes", {7, 15, 23, 31}},
              {"tokens_per_second", 2},
              {"temporal_patch_size", 2},
              {"model_type", "qwen2_5_vl"}};
}

// A SigLIP vision_config (Gemma 3's so400m, SmolVLM's base).
Json siglip_vision(const char* model_type, int64_t hidden, int64_t inter, int64_t layers, int64_t heads,
                   int64_t patch, int64_t image_size) {
  return Json{{"model_type", model_type},
              {"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"patch_size", patch},
              {"image_size", image_size},
              {"num_channels", 3},
              {"hidden_act", "gelu_pytorch_tanh"},
              {"layer_norm_eps", 1e-6},
              {"vision_use_head", false}};
}

// xorshift64*: fast deterministic fill for hundreds of millions of values.
struct Rng {
  uint64_t s;
  float uniform() {  // [-1, 1)
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    uint64_t r = s * 0x2545F4914F6CDD1Dull;
    return static_cast<float>(static_cast<int64_t>(r >> 40) - (1 << 23)) / static_cast<float>(1 << 23);
  }
};

Tensor random_matrix(const Shape& shape, float amplitude, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::kF32, MemCategory::kOther);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
    Rng rng{seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b) + 1};
    for (int64_t i = b; i < e; ++i) p[i] = amplitude * rng.uniform();
  }, 1 << 20);
  return t;
}

Tensor filled(int64_t n, float value, DType dtype) {
  Tensor t = Tensor::empty({n}, DType::kF32, MemCategory::kOther);
  std::fill(t.data<float>(), t.data<float>() + n, value);
  return t.to(dtype, MemCategory::kOther);
}

}  // namespace

const std::vector<SyntheticShape>& synthetic_shapes() {
  static const std::vector<SyntheticShape> shapes = {
      // SmolVLM-256M's language model (SmolLM2-135M): hidden 576, 30 layers, 9 heads / 3 kv heads.
      {"smollm2-135m", "llama", llama_like(576, 1536, 30, 9, 3, 49152, true, 100000.0, 1e-5)},
      // Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads / 2 kv heads, tied.
      {"qwen2.5-0.5b", "qwen2", llama_like(896, 4864, 24, 14, 2, 151936, true, 1000000.0, 1e-6)},
      // Qwen2.5-VL-3B's language model (Qwen2.5-3B): hidden 2048, 36 layers, 16 / 2 heads, tied.
      {"qwen2.5-3b", "qwen2", llama_like(2048, 11008, 36, 16, 2, 151936, true, 1000000.0, 1e-6)},
      // Qwen2.5-VL-7B's language model (Qwen2.5-7B): hidden 3584, 28 layers, 28 / 4 heads, untied.
      {"qwen2.5-7b", "qwen2", llama_like(3584, 18944, 28, 28, 4, 152064, false, 1000000.0, 1e-6)},
      // Llama-3.2-1B: hidden 2048, 16 layers, 32 / 8 heads, tied.
      {"llama3.2-1b", "llama", llama_like(2048, 8192, 16, 32, 8, 128256, true, 500000.0, 1e-5)},
      // The VLM targets, by their VLM names: text decoders, plus the vision tower with --image.
      // Qwen2.5-VL-3B-Instruct text_config: hidden 2048, 36 layers, 16 / 2 heads (head_dim 128),
      // intermediate 11008, vocab 151936, tied.
      // Vision (both sizes): the Qwen2.5-VL ViT, 32 blocks of 1280 (16 heads of 80), SwiGLU 3420, patch 14 x 2
      // frames, window attention (112 px windows) except blocks 7/15/23/31, 2x2 merger to out_hidden_size.
      {"qwen2.5-vl-3b", "qwen2", llama_like(2048, 11008, 36, 16, 2, 151936, true, 1000000.0, 1e-6), "qwen2_5_vl",
       qwen25_vl_vision(2048)},
      // Qwen2.5-VL-7B-Instruct: hidden 3584, 28 layers, 28 / 4 heads, intermediate 18944, vocab 152064,
      // untied.
      {"qwen2.5-vl-7b", "qwen2", llama_like(3584, 18944, 28, 28, 4, 152064, false, 1000000.0, 1e-6), "qwen2_5_vl",
       qwen25_vl_vision(3584)},
      // Gemma-3-4B-it text_config: hidden 2560, 34 layers, 8 / 4 heads of 256, intermediate 10240, vocab
      // 262208, tied; sliding window 1024 with every 6th layer global (rope 10k local, 1M x8 linear global).
      // Vision: SigLIP so400m at 896 px (27 layers of 1152, 16 heads of 72, MLP 4304, patch 14: 4096 patches
      // average-pooled to 256 tokens), then mm_soft_emb_norm and the [1152, 2560] mm_input_projection.
      {"gemma-3-4b", "gemma3_text", gemma3_like(2560, 10240, 34, 8, 4, 256, 262208, 1024, 6), "gemma3",
       siglip_vision("siglip_vision_model", 1152, 4304, 27, 16, 14, 896)},
      // SmolVLM-256M-Instruct text_config (SmolLM2-135M with SmolVLM's 49280-token vocabulary): hidden 576,
      // 30 layers, 9 / 3 heads, intermediate 1536; untied (the checkpoint carries its own lm_head).
      // Vision: SigLIP base at 512 px (12 layers of 768, 12 heads, MLP 3072, patch 16: 1024 patches per tile),
      // pixel shuffle by 4 (64 tokens per 512 px tile) and the [576, 12288] connector.
      {"smolvlm-256m", "llama", llama_like(576, 1536, 30, 9, 3, 49280, false, 100000.0, 1e-5), "idefics3",
       siglip_vision("idefics3_vision", 768, 3072, 12, 12, 16, 512)},
  };
  return shapes;
}

const SyntheticShape& find_synthetic_shape(const std::string& name) {
  std::string known;
  for (const auto& s : synthetic_shapes()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  throw_error(ErrorKind::kInvalidArgument, "unknown synthetic shape '{}' (known: {})", name, known);
}

namespace {

// GPT-2's ByteLevel alphabet: byte b as the character the byte-level BPE vocabularies spell it with.
std::string byte_level_char(int b) {
  auto printable = [](int c) { return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255); };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int c = 0; c < b; ++c) cp += printable(c) ? 0 : 1;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// tokenizer.json of a byte-level BPE without merges: every byte of text is one token (ids 0..255), `specials`
// are added tokens 256 + i (HF numbers added tokens missing from the model's vocabulary from its size on).
// Real vocabularies merge bytes; the prompt length is what the bench controls.
constexpr int32_t kByteVocab = 256;
Json byte_tokenizer(const std::vector<std::string>& specials) {
  Json added = Json::array();
  for (size_t i = 0; i < specials.size(); ++i)
    added.push_back({{"id", kByteVocab + static_cast<int64_t>(i)},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  Json vocab = Json::object();
  for (int b = 0; b < kByteVocab; ++b) vocab[byte_level_char(b)] = b;
  const Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return Json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", byte_level},
              {"post_processor", nullptr},
              {"decoder", byte_level},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", Json::array()}}}};
}

int32_t special_id(const std::vector<std::string>& specials, const std::string& token) {
  auto it = std::find(specials.begin(), specials.end(), token);
  VLM_CHECK(it != specials.end(), ErrorKind::kInternal, "synthetic tokenizer lacks '{}'", token);
  return kByteVocab + static_cast<int32_t>(it - specials.begin());
}

void write_json(const std::string& path, const Json& j) {
  std::ofstream f(path);
  f << j.dump(2);
  VLM_CHECK(f.good(), ErrorKind::kIo, "{}: cannot write", path);
}

constexpr int64_t kIdefics3Shuffle = 4;  // SmolVLM-256M's scale_factor
const Json kClipMean = {0.48145466, 0.4578275, 0.40821073};
const Json kClipStd = {0.26862954, 0.26130258, 0.27577711};
const Json kHalf = {0.5, 0.5, 0.5};
constexpr double kRescale = 1.0 / 255.0;

// What a VLM shape adds around its text decoder: the top-level config, the files prepare_prompt reads, and
// where the language model's tensors live (the Hub layouts of the real checkpoints).
struct VlmLayout {
  Json config;                    // config.json
  std::vector<std::string> specials;
  Json tokenizer_config, chat_template, preprocessor, processor = nullptr;
  std::string lm_prefix, head_name;
};

VlmLayout vlm_layout(const SyntheticShape& shape, const Json& text_config) {
  VlmLayout v;
  // The nested text_config of the Gemma 3 / Idefics3 layouts: the decoder's fields only (quantization and the
  // architecture belong to the top level).
  Json nested = text_config;
  for (const char* k : {"quantization", "quantization_config", "architectures"}) nested.erase(k);
  const Json& vc = shape.vision_config;
  const std::string user_turn_images =
      "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == "
      "'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}";
  auto with_image = [&](const std::string& image) {
    std::string t = user_turn_images;
    t.replace(t.find("IMAGE"), 5, image);
    return t;
  };
  if (shape.vlm_type == "qwen2_5_vl") {
    // Qwen2.5-VL-*-Instruct: flat config (the text fields at the top), M-RoPE sections 16/24/24.
    v.specials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                  "<|video_pad|>"};
    v.config = text_config;
    v.config["model_type"] = "qwen2_5_vl";
    v.config["architectures"] = {"Qwen2_5_VLForConditionalGeneration"};
    v.config["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", {16, 24, 24}}};
    v.config["vision_start_token_id"] = special_id(v.specials, "<|vision_start|>");
    v.config["vision_end_token_id"] = special_id(v.specials, "<|vision_end|>");
    v.config["image_token_id"] = special_id(v.specials, "<|image_pad|>");
    v.config["video_token_id"] = special_id(v.specials, "<|video_pad|>");
    v.config["eos_token_id"] = special_id(v.specials, "<|im_end|>");
    v.config["vision_config"] = vc;
    v.tokenizer_config = {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"},
                          {"processor_class", "Qwen2_5_VLProcessor"}};
    v.chat_template =
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
        "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n" +
        with_image("<|vision_start|><|image_pad|><|vision_end|>") +
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    v.preprocessor = {{"do_convert_rgb", true}, {"do_normalize", true}, {"do_rescale", true}, {"do_resize", true},
                      {"image_mean", kClipMean}, {"image_std", kClipStd},
                      {"image_processor_type", "Qwen2VLImageProcessor"}, {"merge_size", 2}, {"patch_size", 14},
                      {"temporal_patch_size", 2}, {"resample", 3}, {"rescale_factor", kRescale},
                      {"min_pixels", 3136}, {"max_pixels", 12845056}, {"processor_class", "Qwen2_5_VLProcessor"}};
    v.lm_prefix = "model.";
    v.head_name = "lm_head";
  } else if (shape.vlm_type == "gemma3") {
    // gemma-3-4b-it: text_config nested, 256 soft tokens per 896 px image between boi / eoi.
    v.specials = {"<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                  "<image_soft_token>"};
    Json text = nested;
    text["model_type"] = "gemma3_text";
    v.config = {{"model_type", "gemma3"},
                {"architectures", {"Gemma3ForConditionalGeneration"}},
                {"boi_token_index", special_id(v.specials, "<start_of_image>")},
                {"eoi_token_index", special_id(v.specials, "<end_of_image>")},
                {"image_token_index", special_id(v.specials, "<image_soft_token>")},
                {"mm_tokens_per_image", 256},
                {"bos_token_id", special_id(v.specials, "<bos>")},
                {"eos_token_id", {special_id(v.specials, "<eos>"), special_id(v.specials, "<end_of_turn>")}},
                {"pad_token_id", special_id(v.specials, "<pad>")},
                {"tie_word_embeddings", true},
                {"text_config", text},
                {"vision_config", vc}};
    v.tokenizer_config = {{"bos_token", "<bos>"}, {"eos_token", "<end_of_turn>"}, {"pad_token", "<pad>"},
                          {"boi_token", "<start_of_image>"}, {"eoi_token", "<end_of_image>"},
                          {"image_token", "<image_soft_token>"}, {"processor_class", "Gemma3Processor"}};
    v.chat_template = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ ('model' if m['role'] == 'assistant' "
                      "else m['role']) }}\n" +
                      with_image("<start_of_image>") +
                      "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";
    const int64_t side = vc["image_size"];
    v.preprocessor = {{"do_convert_rgb", true}, {"do_normalize", true}, {"do_pan_and_scan", false},
                      {"do_rescale", true}, {"do_resize", true}, {"image_mean", kHalf}, {"image_std", kHalf},
                      {"image_processor_type", "Gemma3ImageProcessor"}, {"image_seq_length", 256}, {"resample", 2},
                      {"rescale_factor", kRescale}, {"size", {{"height", side}, {"width", side}}},
                      {"processor_class", "Gemma3Processor"}};
    v.processor = {{"image_seq_length", 256}, {"processor_class", "Gemma3Processor"}};
    v.lm_prefix = "language_model.model.";
    v.head_name = "language_model.lm_head";
  } else if (shape.vlm_type == "idefics3") {
    // SmolVLM-256M-Instruct: images resized to 2048 px (4 tiles) on the long side, split into 512 px tiles
    // (+ the global image), (512 / 16)² / 4² = 64 tokens each, wrapped in <fake_token_around_image> and
    // <row_r_col_c> / <global-img>. Derived from the vision_config so that smaller test towers stay consistent.
    v.specials = {"<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                  "<global-img>"};
    for (int r = 1; r <= 8; ++r)
      for (int c = 1; c <= 8; ++c) v.specials.push_back(fmt::format("<row_{}_col_{}>", r, c));
    Json text = nested;
    text["model_type"] = "llama";
    v.config = {{"model_type", "idefics3"},
                {"architectures", {"Idefics3ForConditionalGeneration"}},
                {"image_token_id", special_id(v.specials, "<image>")},
                {"scale_factor", kIdefics3Shuffle},
                {"pad_token_id", special_id(v.specials, "<|endoftext|>")},
                {"tie_word_embeddings", false},
                {"text_config", text},
                {"vision_config", vc}};
    v.tokenizer_config = {{"bos_token", "<|im_start|>"}, {"eos_token", "<end_of_utterance>"},
                          {"pad_token", "<|endoftext|>"},
                          {"extra_special_tokens", {"<fake_token_around_image>", "<image>", "<end_of_utterance>"}},
                          {"processor_class", "Idefics3Processor"}};
    v.chat_template = "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:" + with_image("<image>") +
                      "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
    const int64_t tile = vc["image_size"], patch = vc["patch_size"];
    const int64_t seq_len = (tile / patch) * (tile / patch) / (kIdefics3Shuffle * kIdefics3Shuffle);
    v.preprocessor = {{"do_convert_rgb", true}, {"do_image_splitting", true}, {"do_normalize", true},
                      {"do_pad", true}, {"do_rescale", true}, {"do_resize", true}, {"image_mean", kHalf},
                      {"image_std", kHalf}, {"image_processor_type", "Idefics3ImageProcessor"},
                      {"max_image_size", {{"longest_edge", tile}}}, {"resample", 1}, {"rescale_factor", kRescale},
                      {"size", {{"longest_edge", 4 * tile}}}, {"processor_class", "Idefics3Processor"}};
    v.processor = {{"image_seq_len", seq_len}, {"processor_class", "Idefics3Processor"}};
    v.lm_prefix = "model.text_model.";
    v.head_name = "lm_head";
  } else {
    throw_error(ErrorKind::kInternal, "synthetic shape {}: unknown vlm_type '{}'", shape.name, shape.vlm_type);
  }
  v.config["torch_dtype"] = text_config["torch_dtype"];
  if (text_config.contains("quantization")) {
    v.config["quantization"] = text_config["quantization"];
    v.config["quantization_config"] = text_config["quantization_config"];
  }
  return v;
}

}  // namespace

int64_t write_synthetic_checkpoint(const SyntheticShape& shape, const SyntheticOptions& options,
                                   const std::string& folder) {
  namespace fs = std::filesystem;
  VLM_CHECK(!options.with_vision || !shape.vlm_type.empty(), ErrorKind::kInvalidArgument,
            "synthetic shape {} is a text model: it has no vision tower to write", shape.name);
  fs::create_directories(folder);
  const Json& c = shape.config;
  const int64_t hidden = c["hidden_size"], inter = c["intermediate_size"], layers = c["num_hidden_layers"];
  const int64_t heads = c["num_attention_heads"], kv = c["num_key_value_heads"], vocab = c["vocab_size"];
  const int64_t hd = c.value("head_dim", hidden / heads);
  const bool tied = c["tie_word_embeddings"];
  const bool qkv_bias = shape.model_type == "qwen2";
  // Gemma 3: per-head q/k norms and sandwich norms, all (1 + w) norms, so w = 0 is the identity.
  const bool gemma3 = shape.model_type == "gemma3_text";
  const float norm_one = gemma3 ? 0.0f : 1.0f;

  Json config = c;
  config["model_type"] = shape.model_type;
  config["architectures"] = Json::array({gemma3                        ? "Gemma3ForCausalLM"
                                         : shape.model_type == "qwen2" ? "Qwen2ForCausalLM"
                                                                       : "LlamaForCausalLM"});
  config["torch_dtype"] = options.dtype == DType::kBF16 ? "bfloat16" : options.dtype == DType::kF16 ? "float16" : "float32";
  config["head_dim"] = hd;
  if (options.quant) {
    Json q = {{"group_size", options.quant->group_size}, {"bits", options.quant->bits}, {"mode", "affine"}};
    config["quantization"] = q;
    config["quantization_config"] = q;
  }
  std::string lm_prefix = "model.", head_name = "lm_head";
  if (options.with_vision) {
    VlmLayout v = vlm_layout(shape, config);
    lm_prefix = v.lm_prefix;
    head_name = v.head_name;
    write_json(folder + "/config.json", v.config);
    write_json(folder + "/tokenizer.json", byte_tokenizer(v.specials));
    write_json(folder + "/tokenizer_config.json", v.tokenizer_config);
    write_json(folder + "/chat_template.json", Json{{"chat_template", v.chat_template}});
    write_json(folder + "/preprocessor_config.json", v.preprocessor);
    if (!v.processor.is_null()) write_json(folder + "/processor_config.json", v.processor);
  } else {
    write_json(folder + "/config.json", config);
  }

  SafetensorsWriter writer;
  uint64_t seed = options.seed;
  auto add_linear = [&](const std::string& name, int64_t out, int64_t in) {
    Tensor w = random_matrix({out, in}, 0.05f, seed++);
    if (options.quant) {
      QuantizedMatrix q = quantize_affine(w, *options.quant, options.dtype, MemCategory::kOther);
      writer.add(name + ".weight", q.packed);
      writer.add(name + ".scales", q.scales);
      writer.add(name + ".biases", q.biases);
    } else {
      writer.add(name + ".weight", w.to(options.dtype, MemCategory::kOther));
    }
  };
  auto add_bias = [&](const std::string& name, int64_t n) {
    writer.add(name, random_matrix({n}, 0.05f, seed++).to(options.dtype, MemCategory::kOther));
  };
  const std::string& P = lm_prefix;
  add_linear(P + "embed_tokens", vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    std::string p = P + "layers." + std::to_string(l);
    add_linear(p + ".self_attn.q_proj", heads * hd, hidden);
    add_linear(p + ".self_attn.k_proj", kv * hd, hidden);
    add_linear(p + ".self_attn.v_proj", kv * hd, hidden);
    add_linear(p + ".self_attn.o_proj", hidden, heads * hd);
    if (qkv_bias) {
      add_bias(p + ".self_attn.q_proj.bias", heads * hd);
      add_bias(p + ".self_attn.k_proj.bias", kv * hd);
      add_bias(p + ".self_attn.v_proj.bias", kv * hd);
    }
    add_linear(p + ".mlp.gate_proj", inter, hidden);
    add_linear(p + ".mlp.up_proj", inter, hidden);
    add_linear(p + ".mlp.down_proj", hidden, inter);
    writer.add(p + ".input_layernorm.weight", filled(hidden, norm_one, options.dtype));
    writer.add(p + ".post_attention_layernorm.weight", filled(hidden, norm_one, options.dtype));
    if (gemma3) {
      writer.add(p + ".pre_feedforward_layernorm.weight", filled(hidden, norm_one, options.dtype));
      writer.add(p + ".post_feedforward_layernorm.weight", filled(hidden, norm_one, options.dtype));
      writer.add(p + ".self_attn.q_norm.weight", filled(hd, norm_one, options.dtype));
      writer.add(p + ".self_attn.k_norm.weight", filled(hd, norm_one, options.dtype));
    }
  }
  writer.add(P + "norm.weight", filled(hidden, norm_one, options.dtype));
  if (!tied) add_linear(head_name, vocab, hidden);

  if (options.with_vision) {
    // The tower and projector: dense in options.dtype whatever the language model's quantization.
    const Json& vc = shape.vision_config;
    auto dense = [&](const std::string& name, const Shape& shape_of) {
      writer.add(name, random_matrix(shape_of, 0.05f, seed++).to(options.dtype, MemCategory::kOther));
    };
    auto constant = [&](const std::string& name, int64_t n, float value) {
      writer.add(name, filled(n, value, options.dtype));
    };
    auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
      dense(name + ".weight", {out, in});
      if (bias) dense(name + ".bias", {out});
    };
    if (shape.vlm_type == "qwen2_5_vl") {
      const int64_t d = vc["hidden_size"], vi = vc["intermediate_size"], depth = vc["depth"];
      const int64_t patch = vc["patch_size"], t = vc["temporal_patch_size"], merge = vc["spatial_merge_size"];
      const int64_t out = vc["out_hidden_size"], merged = d * merge * merge;
      dense("visual.patch_embed.proj.weight", {d, 3, t, patch, patch});
      for (int64_t l = 0; l < depth; ++l) {
        const std::string b = "visual.blocks." + std::to_string(l);
        constant(b + ".norm1.weight", d, 1.0f);
        constant(b + ".norm2.weight", d, 1.0f);
        linear(b + ".attn.qkv", 3 * d, d, true);
        linear(b + ".attn.proj", d, d, true);
        linear(b + ".mlp.gate_proj", vi, d, true);
        linear(b + ".mlp.up_proj", vi, d, true);
        linear(b + ".mlp.down_proj", d, vi, true);
      }
      constant("visual.merger.ln_q.weight", d, 1.0f);
      linear("visual.merger.mlp.0", merged, merged, true);
      linear("visual.merger.mlp.2", out, merged, true);
    } else {
      // SigLIP: Gemma 3 under vision_tower.vision_model., Idefics3 under model.vision_model.
      const std::string t = shape.vlm_type == "gemma3" ? "vision_tower.vision_model." : "model.vision_model.";
      const int64_t d = vc["hidden_size"], vi = vc["intermediate_size"], depth = vc["num_hidden_layers"];
      const int64_t patch = vc["patch_size"], side = vc["image_size"];
      const int64_t patches = (side / patch) * (side / patch);
      dense(t + "embeddings.patch_embedding.weight", {d, 3, patch, patch});  // PyTorch Conv2d layout
      dense(t + "embeddings.patch_embedding.bias", {d});
      for (int64_t l = 0; l < depth; ++l) {
        const std::string b = t + "encoder.layers." + std::to_string(l);
        constant(b + ".layer_norm1.weight", d, 1.0f);
        constant(b + ".layer_norm1.bias", d, 0.0f);
        constant(b + ".layer_norm2.weight", d, 1.0f);
        constant(b + ".layer_norm2.bias", d, 0.0f);
        for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) linear(b + ".self_attn." + proj, d, d, true);
        linear(b + ".mlp.fc1", vi, d, true);
        linear(b + ".mlp.fc2", d, vi, true);
      }
      constant(t + "post_layernorm.weight", d, 1.0f);
      constant(t + "post_layernorm.bias", d, 0.0f);
      dense(t + "embeddings.position_embedding.weight", {patches, d});
      const int64_t text_hidden = hidden;
      if (shape.vlm_type == "gemma3") {
        constant("multi_modal_projector.mm_soft_emb_norm.weight", d, 0.0f);  // Gemma (1 + w): identity
        dense("multi_modal_projector.mm_input_projection_weight", {d, text_hidden});
      } else {
        const int64_t s2 = kIdefics3Shuffle * kIdefics3Shuffle;  // pixel shuffle of 4 x 4 patches into one token
        dense("model.connector.modality_projection.proj.weight", {text_hidden, d * s2});
      }
    }
  }
  writer.set_metadata("format", "pt");
  writer.write(folder + "/model.safetensors");
  return static_cast<int64_t>(writer.data_bytes());
}

Json BenchResult::to_json() const {
  const bool image_mode = mode == "image";
  Json samples_json = Json::array();
  for (const auto& s : samples) {
    Json j = {{"load_s", s.load_s}, {"prefill_s", s.prefill_s}, {"decode_s", s.decode_s}};
    if (image_mode) {
      j["ttft_s"] = s.ttft_s;
      j["tokenize_s"] = s.tokenize_s;
      j["image_preprocess_s"] = s.image_preprocess_s;
      j["vision_encode_s"] = s.vision_encode_s;
    }
    samples_json.push_back(j);
  }
  Json out{{"model", model},
              {"device", device},
              {"gpu", gpu.empty() ? Json(nullptr) : Json(gpu)},
              {"kernel_path", kernel_path},
              {"threads", threads},
              {"prompt_tokens", prompt_tokens},
              {"gen_tokens", gen_tokens},
              {"load_time_s", load_s},
              {"ttft_s", ttft_s},
              {"prompt_tps", prompt_tps},
              {"generation_tps", decode_tps},
              {"generation_tps_min", decode_tps_min},
              {"generation_tps_max", decode_tps_max},
              {"weight_bytes", weight_bytes},
              {"kv_cache", kv_cache},
              {"decode_bytes_per_token", decode_bytes_per_token},
              {"prefill_flops_per_token", prefill_flops_per_token},
              {"peak_memory_bytes", {{"host", peak_host_bytes}, {"rss", peak_rss_bytes}, {"gpu", peak_gpu_bytes}}},
              {"roofline",
               {{"read_bandwidth_gbs", bandwidth_gbs},
                {"f32_peak_gflops", f32_gflops},
                {"bf16_peak_gflops", bf16_gflops},
                {"decode_roofline_tps", decode_roofline_tps},
                {"decode_fraction", decode_roofline_fraction},
                {"prefill_gflops", prefill_gflops},
                {"prefill_fraction_of_f32_peak", prefill_fraction_of_peak},
                {"prefill_fraction_of_bf16_peak", prefill_fraction_of_bf16_peak}}},
              {"samples", samples_json}};
  if (bandwidth_trials > 0)  // CPU: the spread of the read probe whose median is read_bandwidth_gbs
    out["roofline"]["read_bandwidth_probe"] = {{"statistic", "median"},
                                               {"trials", bandwidth_trials},
                                               {"bursts", bandwidth_bursts},
                                               {"bytes_per_trial", bandwidth_probe_bytes},
                                               {"min_gbs", bandwidth_min_gbs},
                                               {"max_gbs", bandwidth_max_gbs}};
  if (decode_captured_steps > 0)
    out["decode_host_us_per_step"] = {{"captured_steps", decode_captured_steps},
                                      {"capture", decode_capture_us},
                                      {"graph_api", decode_graph_api_us},
                                      {"wait", decode_wait_us}};
  // Additions of the image mode (the fields above keep their meaning; ttft_s then spans every stage).
  out["mode"] = mode;
  if (image_mode) {
    out["image"] = image;
    out["image_tokens"] = image_tokens;
    out["text_tokens"] = text_tokens;
    out["vision_weight_bytes"] = vision_weight_bytes;
    out["stages"] = {{"tokenize_s", tokenize_s},
                     {"image_preprocess_s", image_preprocess_s},
                     {"vision_encode_s", vision_encode_s},
                     {"prefill_s", prefill_s}};
  }
  return out;
}

// ---- image mode ----

void write_synthetic_photo(const std::string& path, int width, int height, uint64_t seed) {
  VLM_CHECK(width >= 16 && height >= 16 && width <= 16384 && height <= 16384, ErrorKind::kInvalidArgument,
            "synthetic photo {}x{}: each side must be within [16, 16384]", width, height);
  // A landscape: sky gradient above a horizon at 55%, ground with furrows below, a few shaded discs and
  // boxes (trees, houses) of seeded size and colour, and per-pixel sensor noise (hash of x, y, seed) so that
  // the JPEG has a photo's entropy, not a flat gradient's.
  struct Blob {
    float cx, cy, rx, ry, col[3];
    bool box;
  };
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  auto u01 = [&] { return 0.5f * rng.uniform() + 0.5f; };
  std::vector<Blob> blobs(12);
  for (Blob& b : blobs) {
    b.cx = u01() * static_cast<float>(width);
    b.cy = (0.45f + 0.4f * u01()) * static_cast<float>(height);
    b.rx = (0.03f + 0.08f * u01()) * static_cast<float>(width);
    b.ry = b.rx * (0.6f + 0.8f * u01());
    for (float& c : b.col) c = 40.0f + 180.0f * u01();
    b.box = u01() < 0.4f;
  }
  const float horizon = 0.55f * static_cast<float>(height);
  std::vector<unsigned char> rgb(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const float fy = static_cast<float>(y), fx = static_cast<float>(x);
      float c[3];
      if (fy < horizon) {
        const float t = fy / horizon;  // 0 at the top, 1 at the horizon
        c[0] = 70 + 120 * t;
        c[1] = 120 + 90 * t;
        c[2] = 200 + 40 * t;
      } else {
        const float t = (fy - horizon) / (static_cast<float>(height) - horizon);
        const float furrow = 12.0f * std::sin(fx * 0.05f + fy * 0.21f) * (0.3f + t);
        c[0] = 90 + 40 * t + furrow;
        c[1] = 120 - 30 * t + furrow;
        c[2] = 50 + 10 * t + 0.5f * furrow;
      }
      for (const Blob& b : blobs) {
        const float dx = (fx - b.cx) / b.rx, dy = (fy - b.cy) / b.ry;
        const bool inside = b.box ? (std::fabs(dx) < 1 && std::fabs(dy) < 1) : (dx * dx + dy * dy < 1);
        if (!inside) continue;
        const float shade = 0.75f + 0.25f * (b.box ? -dx : -(dx + dy) * 0.7f);
        for (int k = 0; k < 3; ++k) c[k] = b.col[k] * shade;
      }
      uint64_t h = (static_cast<uint64_t>(y) << 32 | static_cast<uint64_t>(x)) ^ (seed * 0xD6E8FEB86659FD93ull);
      h = (h ^ (h >> 31)) * 0x7FB5D329728EA185ull;
      h ^= h >> 27;
      const float noise = static_cast<float>(h & 15) - 7.5f;
      unsigned char* px = rgb.data() + (static_cast<size_t>(y) * static_cast<size_t>(width) + x) * 3;
      for (int k = 0; k < 3; ++k) px[k] = static_cast<unsigned char>(std::clamp(c[k] + noise, 0.0f, 255.0f));
    }
  }
  tjhandle tj = tjInitCompress();
  VLM_CHECK(tj != nullptr, ErrorKind::kInternal, "synthetic photo: libjpeg-turbo compressor unavailable");
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj, rgb.data(), width, 0, height, TJPF_RGB, &jpeg, &size, TJSAMP_420, 90, 0);
  const std::string why = rc == 0 ? "" : tjGetErrorStr2(tj);
  tjDestroy(tj);
  if (rc != 0) {
    tjFree(jpeg);
    throw_error(ErrorKind::kInternal, "synthetic photo {}x{}: JPEG compression failed: {}", width, height, why);
  }
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(jpeg), static_cast<std::streamsize>(size));
  tjFree(jpeg);
  VLM_CHECK(f.good(), ErrorKind::kIo, "{}: cannot write the synthetic photo", path);
}

namespace {

// The question of the image prompt, followed by filler prose so that the whole prompt (template, image
// tokens, text) has options.prompt_tokens tokens (0: the question alone). The filler's token count grows with
// its length, so the longest prefix whose tokens fit is found by bisection with the tokenizer alone; the
// measured run reports the prompt's actual length.
std::string padded_question(const std::string& folder, const Tokenizer& tok, const BenchOptions& o) {
  if (o.prompt_tokens == 0) return o.question;
  PromptRequest pr;
  pr.prompt = o.question;
  pr.image_paths = {o.image_path};
  const auto base = static_cast<int64_t>(prepare_prompt(folder, tok, pr).ids.size());
  VLM_CHECK(o.prompt_tokens >= base, ErrorKind::kInvalidArgument,
            "bench: --prompt-tokens {} is below the {} tokens of the image prompt (chat template, image tokens and "
            "the question) of {}",
            o.prompt_tokens, base, o.image_path);
  const int64_t need = o.prompt_tokens - base;
  static const std::string kProse =
      " The photograph shows a quiet street with old stone houses, a church tower, trees along a canal and people "
      "walking under a cloudy afternoon sky.";
  auto with_filler = [&](size_t chars) {
    std::string f = o.question;
    while (f.size() < o.question.size() + chars) f += kProse;
    f.resize(o.question.size() + chars);
    return f;
  };
  const auto q_tokens = static_cast<int64_t>(tok.encode(o.question, false).size());
  auto extra = [&](size_t chars) { return static_cast<int64_t>(tok.encode(with_filler(chars), false).size()) - q_tokens; };
  size_t hi = 1;
  while (extra(hi) <= need && hi < static_cast<size_t>(64 * need + 64)) hi *= 2;
  size_t lo = 0;  // extra(lo) <= need < extra(hi) (or hi at the cap)
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    (extra(mid) <= need ? lo : hi) = mid;
  }
  return with_filler(lo);
}

}  // namespace

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

double kv_decode_bytes(const std::vector<LayerCacheInfo>& layers, const BenchOptions& options,
                       int64_t prompt_tokens) {
  if (options.gen_tokens <= 0) return 0;
  // make_layered_kv_cache's rule: a model with windowed layers keeps its own layout (max_kv_size unused).
  const bool windowed =
      std::any_of(layers.begin(), layers.end(), [](const LayerCacheInfo& l) { return l.sliding_window > 0; });
  const double quantized_value_bytes =
      options.kv_bits ? *options.kv_bits / 8.0 + 8.0 / static_cast<double>(options.kv_group_size) : 4.0;
  double total = 0;
  for (int64_t g = 0; g < options.gen_tokens; ++g) {
    const int64_t offset = prompt_tokens + g;  // rows held before step g writes its own
    const bool quantized = options.kv_bits && offset >= options.quantized_kv_start;
    for (const LayerCacheInfo& l : layers) {
      int64_t rows = offset + 1;
      if (l.sliding_window > 0) rows = std::min(rows, l.sliding_window);
      else if (options.max_kv_size && !windowed) rows = std::min(rows, *options.max_kv_size);
      total += 2.0 * static_cast<double>(l.n_kv_heads * l.head_dim * rows) * (quantized ? quantized_value_bytes : 4.0);
    }
  }
  return total / static_cast<double>(options.gen_tokens);
}

BenchResult run_benchmark(const std::string& folder, const std::string& label, const BenchOptions& options) {
  const int64_t min_prompt = options.image_path.empty() ? 1 : 0;  // image mode: 0 = no filler
  VLM_CHECK(options.prompt_tokens >= min_prompt && options.gen_tokens >= 1 && options.repetitions >= 1,
            ErrorKind::kInvalidArgument,
            "bench: prompt tokens (>= {}), generated tokens and repetitions (>= 1) are {}, {}, {}", min_prompt,
            options.prompt_tokens, options.gen_tokens, options.repetitions);
  KVCacheOptions kv_options;  // checked before anything is loaded
  kv_options.max_kv_size = options.max_kv_size;
  kv_options.kv_bits = options.kv_bits;
  kv_options.kv_group_size = options.kv_group_size;
  kv_options.quantized_kv_start = options.quantized_kv_start;
  kv_options.device = options.device;
  kv_options.validate();
  BenchResult r;
  r.model = label;
  const Device device = options.device;
  const bool on_gpu = device != Device::kCpu;
  { ops::DeviceScope probe(device); }  // refuses an unusable device before anything is loaded
  // Waits for everything issued on the model's device (a no-op on the cpu) before a clock is read.
  auto sync = [device] {
    ops::DeviceScope scope(device);
    ops::synchronize();
  };
  r.device = device_name(device);
  r.kernel_path = on_gpu ? "cuda" : ops::cpu_kernel_path();
  r.threads = ThreadPool::global().num_threads();
  r.prompt_tokens = options.prompt_tokens;
  r.gen_tokens = options.gen_tokens;

  BandwidthProbe cpu_read_probe;
  if (on_gpu) {
    const std::vector<GpuInfo> gpus = cuda_devices();
    if (!gpus.empty()) r.gpu = gpus.front().name;
    r.bandwidth_gbs = ops::cuda::probe_copy_bandwidth_gbs();
    r.bf16_gflops = ops::cuda::probe_bf16_matmul_gflops();
  } else {
    // The read probe runs here and again after the repetitions (pooled_bandwidth); its buffer (GBs) is
    // freed in between, and the peak-RSS mark it left is reset so that peak_rss is the model's.
    cpu_read_probe = probe_read_bandwidth();
    std::ofstream("/proc/self/clear_refs") << "5";  // "5": reset VmHWM (Linux >= 4.0); harmless elsewhere
    ComputeProbe cp = probe_compute();
    r.f32_gflops = cp.f32_gflops;
    r.bf16_gflops = cp.bf16_gflops;
  }

  // Image mode: the question, padded so that the whole prompt has options.prompt_tokens tokens (not timed).
  const bool image_mode = !options.image_path.empty();
  r.mode = image_mode ? "image" : "text";
  std::string question;
  std::unique_ptr<Tokenizer> tokenizer;
  if (image_mode) {
    tokenizer = Tokenizer::from_folder(folder);
    question = padded_question(folder, *tokenizer, options);
  }

  MemoryTracker::instance().reset_peak_all();
  std::vector<double> loads, prefills, decodes, ttfts, tokenizes, preprocesses, encodes;
  LoadedModel keep;
  int64_t prompt_tokens = options.prompt_tokens;
  int64_t peak_host = 0, peak_gpu = 0;  // image mode: the peaks before each generate() call
  for (int rep = 0; rep < options.repetitions; ++rep) {
    BenchSample s;
    ops::cuda::GraphStats graphs_before, graphs_after;  // around the decode steps (CUDA only)
    if (on_gpu) keep = LoadedModel{};  // one model on the GPU at a time: the peak is one model's
    auto t0 = Clock::now();
    LoadOptions lo;
    lo.mode = options.lazy_load ? LoadMode::kLazy : LoadMode::kEager;
    lo.text_only = !image_mode;  // the text protocol feeds token ids only; a VLM's tower would only add to the peak
    LoadedModel model = load_model(folder, lo);
    LanguageModel& lm = *model.language_model;
    lm.to_device(device);
    if (image_mode) {
      VLM_CHECK(model.vision != nullptr, ErrorKind::kUnsupported,
                "bench --image: {} (model_type '{}') has no vision model", folder, model.config.model_type);
      model.vision->to_device(device);  // where the decoder runs, as generate does
      tokenizer = Tokenizer::from_folder(folder);
    }
    sync();
    s.load_s = seconds_since(t0);
    const int64_t vocab = lm.vocab_size(), hidden = lm.hidden_size();

    if (image_mode) {
      // `vlmcheck generate --image` from here on: prepare_prompt then generate(), greedy, no stop ids.
      t0 = Clock::now();
      PromptRequest pr;
      pr.prompt = question;
      pr.image_paths = {options.image_path};
      PreparedPrompt prompt = prepare_prompt(folder, *tokenizer, pr, model.vision.get(), &lm);
      VLM_CHECK(prompt.multimodal.has_value(), ErrorKind::kInternal, "bench: {} built no multimodal prompt", label);
      GenerateRequest req;
      req.prompt_ids = prompt.ids;
      req.multimodal = &*prompt.multimodal;
      req.times.image_preprocess_s = prompt.image_preprocess_s;
      req.times.vision_encode_s = prompt.vision_encode_s;
      req.times.tokenize_s = std::max(0.0, seconds_since(t0) - prompt.image_preprocess_s - prompt.vision_encode_s);
      GenerationParams params;
      params.max_tokens = options.gen_tokens + 1;  // the first token comes from prefill, then gen_tokens steps
      params.temperature = 0.0f;
      params.seed = 0;
      params.prefill_step_size = options.prefill_step_size;
      params.max_kv_size = options.max_kv_size;
      params.kv_bits = options.kv_bits;
      params.kv_group_size = options.kv_group_size;
      params.quantized_kv_start = options.quantized_kv_start;
      // generate() restarts the tracker's peaks: keep those of loading and vision encoding.
      peak_host = std::max(peak_host, MemoryTracker::instance().snapshot(MemDevice::kHost).peak);
      peak_gpu = std::max(peak_gpu, MemoryTracker::instance().snapshot(MemDevice::kGpu).peak);
      graphs_before = ops::cuda::graph_stats();
      GenerationResult g = generate(lm, *tokenizer, {}, req, params);
      graphs_after = ops::cuda::graph_stats();
      VLM_CHECK(g.generation_tokens == options.gen_tokens + 1, ErrorKind::kInternal,
                "bench: {} generated {} tokens, expected {}", label, g.generation_tokens, options.gen_tokens + 1);
      s.prefill_s = g.times.prefill_s;
      s.decode_s = g.times.decode_s;
      s.ttft_s = g.ttft_s;
      r.kv_cache = g.kv_cache;
      s.tokenize_s = req.times.tokenize_s;
      s.image_preprocess_s = prompt.image_preprocess_s;
      s.vision_encode_s = prompt.vision_encode_s;
      prompt_tokens = g.prompt_tokens;
      r.image_tokens = prompt.image_tokens;
      r.text_tokens = g.prompt_tokens - prompt.image_tokens;
      if (!prompt.image_info.empty()) r.image = prompt.image_info.front().to_json();
      r.vision_weight_bytes = static_cast<int64_t>(model.vision->weight_bytes());
    } else {
      auto cache = make_layered_kv_cache(lm.cache_layout(), kv_options);

      // Prompt: deterministic pseudo-random ids.
      std::vector<int32_t> ids(static_cast<size_t>(options.prompt_tokens));
      Rng rng{1234};
      for (auto& id : ids) id = static_cast<int32_t>((rng.uniform() * 0.5f + 0.5f) * static_cast<float>(vocab - 1));
      std::vector<float> logits(static_cast<size_t>(vocab));
      double embed_s = 0.0;  // the host's share: the prompt's rows gathered into `emb` (`--verbose` logs it)
      t0 = Clock::now();
      // One chunk-sized buffer for the whole prompt, allocated as generate() allocates its own (a host tensor:
      // large blocks are 2 MB-aligned with huge pages advised, and never zero-filled). A fresh std::vector per
      // chunk cost 2-11 ms of a 2048-token prompt's TTFT in page faults and zeroing that generate never pays.
      Tensor emb_buf = Tensor::empty({std::min(options.prefill_step_size, options.prompt_tokens), hidden}, DType::kF32,
                                     MemCategory::kScratch);
      float* chunk_emb = emb_buf.data<float>();
      std::vector<int64_t> pos(static_cast<size_t>(std::min(options.prefill_step_size, options.prompt_tokens)));
      for (int64_t begin = 0; begin < options.prompt_tokens; begin += options.prefill_step_size) {
        int64_t n = std::min(options.prefill_step_size, options.prompt_tokens - begin);
        const auto te = Clock::now();
        lm.embed(ids.data() + begin, n, chunk_emb);
        embed_s += seconds_since(te);
        for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = begin + i;
        lm.forward(chunk_emb, n, Positions{pos.data(), n, 1}, *cache, ops::AttentionMask{}, logits.data(), false);
      }
      sync();  // (forward already waited for its logits; this keeps the clock honest regardless)
      s.prefill_s = seconds_since(t0);
      s.ttft_s = s.prefill_s;
      VLM_LOG_DEBUG("bench: {} prefill {:.2f} ms = host embedding {:.2f} ms + forward {:.2f} ms (upload, layers, logits)",
                    label, 1e3 * s.prefill_s, 1e3 * embed_s, 1e3 * (s.prefill_s - embed_s));

      for (float v : logits)
        VLM_CHECK(std::isfinite(v), ErrorKind::kInternal, "bench: non-finite logits from {}", label);

      // Greedy decode as generate runs it: queued one step ahead where the model queues (a GPU), else
      // forward_argmax (on a device only the id comes back).
      int32_t next = 0;
      {
        ops::DeviceScope host(Device::kCpu);
        ops::argmax(logits.data(), 1, vocab, &next);
      }
      graphs_before = ops::cuda::graph_stats();
      const ThreadPool::Stats pool_before = ThreadPool::global().stats();
      t0 = Clock::now();
      if (queued_decode(lm)) {  // as generate() runs it there: step g queued before step g - 1's token is read
        lm.begin_queued(next);
        for (int64_t g = 0; g < options.gen_tokens; ++g) {
          int64_t pos = options.prompt_tokens + g;
          lm.queue_greedy(Positions{&pos, 1, 1}, *cache);
          if (g > 0) next = lm.next_queued();
        }
        if (options.gen_tokens > 0) next = lm.next_queued();
      } else {
        std::vector<float> emb(static_cast<size_t>(hidden));
        for (int64_t g = 0; g < options.gen_tokens; ++g) {
          int64_t pos = options.prompt_tokens + g;
          lm.embed(&next, 1, emb.data());
          next = lm.forward_argmax(emb.data(), 1, Positions{&pos, 1, 1}, *cache, ops::AttentionMask{});
        }
      }
      sync();
      s.decode_s = seconds_since(t0);
      graphs_after = ops::cuda::graph_stats();
      const ThreadPool::Stats pool_after = ThreadPool::global().stats();
      // On the CPU: how many of decode's pool jobs ran on the caller alone because the cores were shared
      // (core/thread_pool.h), which makes more threads no faster.
      VLM_LOG_DEBUG("bench: {} decode pool jobs: {} on {} threads, {} on the caller alone (cores shared; {} busy "
                    "windows)",
                    label, pool_after.parallel_jobs - pool_before.parallel_jobs, ThreadPool::global().num_threads(),
                    pool_after.solo_jobs - pool_before.solo_jobs, pool_after.busy_windows - pool_before.busy_windows);
      r.kv_cache = cache->describe();
    }
    r.samples.push_back(s);
    if (const int64_t steps = graphs_after.steps - graphs_before.steps -
                              (graphs_after.eager_steps - graphs_before.eager_steps);
        steps > 0) {
      r.decode_captured_steps = steps;
      const double per_step_us = 1e6 / static_cast<double>(steps);
      r.decode_capture_us = (graphs_after.capture_s - graphs_before.capture_s) * per_step_us;
      r.decode_graph_api_us = (graphs_after.graph_api_s - graphs_before.graph_api_s) * per_step_us;
      r.decode_wait_us = (graphs_after.wait_s - graphs_before.wait_s) * per_step_us;
    }
    loads.push_back(s.load_s);
    prefills.push_back(s.prefill_s);
    decodes.push_back(s.decode_s);
    ttfts.push_back(s.ttft_s);
    tokenizes.push_back(s.tokenize_s);
    preprocesses.push_back(s.image_preprocess_s);
    encodes.push_back(s.vision_encode_s);
    if (rep == options.repetitions - 1) {
      r.weight_bytes = static_cast<int64_t>(lm.weight_bytes());
      // Decode reads every weight except the embedding table's unused rows; with a tied head the table is
      // read in full by the head, so weight_bytes counts it once either way.
      r.decode_bytes_per_token =
          r.weight_bytes + static_cast<int64_t>(std::llround(kv_decode_bytes(lm.cache_layout(), options, prompt_tokens)));
      // Prefill FLOPs per token: 2 per weight of every projection, plus QKᵀ and PV over the mean causal
      // context (P/2), plus the head spread over the prompt — forward(all_logits=false) computes logits for the
      // last position of each prefill chunk only. From the config, so it holds for quantized weights too.
      // (The language model's prefill only: the vision tower's FLOPs are not counted.)
      const Json& t = model.config.text();
      const double h = t.value("hidden_size", 0.0), inter = t.value("intermediate_size", 0.0);
      const double nl = t.value("num_hidden_layers", 0.0), nh = t.value("num_attention_heads", 0.0);
      const double nkv = t.value("num_key_value_heads", nh), v = t.value("vocab_size", 0.0);
      const double hd = t.value("head_dim", nh > 0 ? h / nh : 0.0);
      const double per_layer = h * nh * hd * 2 + h * nkv * hd * 2 + 3 * h * inter;
      const double attn = 4.0 * nh * hd * (static_cast<double>(prompt_tokens) / 2);
      const double chunks =
          std::ceil(static_cast<double>(prompt_tokens) / static_cast<double>(options.prefill_step_size));
      r.prefill_flops_per_token =
          2.0 * nl * per_layer + nl * attn + 2.0 * v * h * chunks / static_cast<double>(prompt_tokens);
    }
    keep = std::move(model);
  }
  r.prompt_tokens = prompt_tokens;
  r.load_s = median(loads);
  r.ttft_s = median(ttfts);
  r.prefill_s = median(prefills);
  if (image_mode) {
    r.tokenize_s = median(tokenizes);
    r.image_preprocess_s = median(preprocesses);
    r.vision_encode_s = median(encodes);
  }
  r.prompt_tps = static_cast<double>(prompt_tokens) / r.prefill_s;
  std::vector<double> tps;
  for (double d : decodes) tps.push_back(static_cast<double>(options.gen_tokens) / d);
  r.decode_tps = median(tps);
  r.decode_tps_min = *std::min_element(tps.begin(), tps.end());
  r.decode_tps_max = *std::max_element(tps.begin(), tps.end());
  r.peak_host_bytes = std::max(peak_host, MemoryTracker::instance().snapshot(MemDevice::kHost).peak);
  r.peak_rss_bytes = process_memory().peak_rss;
  r.peak_gpu_bytes = std::max(peak_gpu, MemoryTracker::instance().snapshot(MemDevice::kGpu).peak);
  if (!on_gpu) {  // the second burst of the read probe, after the peaks were read
    const BandwidthProbe bw = pooled_bandwidth(cpu_read_probe, probe_read_bandwidth());
    r.bandwidth_gbs = bw.read_gbs;
    r.bandwidth_min_gbs = bw.min_gbs;
    r.bandwidth_max_gbs = bw.max_gbs;
    r.bandwidth_trials = bw.trials;
    r.bandwidth_bursts = bw.bursts;
    r.bandwidth_probe_bytes = bw.bytes;
  }
  r.decode_roofline_tps = r.bandwidth_gbs * 1e9 / static_cast<double>(r.decode_bytes_per_token);
  r.decode_roofline_fraction = r.decode_tps / r.decode_roofline_tps;
  r.prefill_gflops = r.prefill_flops_per_token * r.prompt_tps / 1e9;
  // Against the f32 FMA peak (our GEMMs accumulate in f32 panels) and, where the CPU has it, the
  // bf16 dot-product peak (what a bf16 model could at most reach).
  r.prefill_fraction_of_peak = r.f32_gflops > 0 ? r.prefill_gflops / r.f32_gflops : 0;
  r.prefill_fraction_of_bf16_peak = r.bf16_gflops > 0 ? r.prefill_gflops / r.bf16_gflops : 0;
  return r;
}

}  // namespace vlm
