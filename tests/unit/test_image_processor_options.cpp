// Image-processor selection, options and bad input: typed errors that name the field or limit, the user's
// visual-token budget (--max-pixels / --min-pixels / --resize-shape) acting exactly like the equivalent
// config, backends recorded, token strings taken from tokenizer_config.json.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "image/processor.h"

namespace vlm {
namespace {

Image gray(int w, int h) {
  Image im(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w * 3; ++x) im.row(y)[x] = static_cast<uint8_t>((x * 7 + y * 13) & 255);
  return im;
}

const Json kQwenConfig = {{"model_type", "qwen2_vl"}};
const Json kQwenIp = {{"size", {{"shortest_edge", 3136}, {"longest_edge", 1003520}}}};

// Runs f and returns the Error it throws (failing the test when it does not).
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no vlm::Error thrown";
  return Error(ErrorKind::kInternal, "");
}

bool same_pixels(const ProcessedImage& a, const ProcessedImage& b) {
  return a.pixels.shape() == b.pixels.shape() && std::memcmp(a.pixels.raw(), b.pixels.raw(), a.pixels.nbytes()) == 0;
}

TEST(ImageProcessorSelect, ByModelTypeWithTheFamilyDefaultBackend) {
  const std::pair<const char*, PixelBackend> cases[] = {{"qwen2_vl", PixelBackend::kTorchvision},
                                                        {"qwen2_5_vl", PixelBackend::kTorchvision},
                                                        {"idefics3", PixelBackend::kPil},
                                                        {"smolvlm", PixelBackend::kPil},
                                                        {"llava", PixelBackend::kTorchvision},
                                                        {"gemma3", PixelBackend::kTorchvision},
                                                        {"paligemma", PixelBackend::kTorchvision}};
  for (auto [type, backend] : cases) {
    SCOPED_TRACE(type);
    Json ip = Json::object();
    if (std::string(type) == "paligemma") ip["image_seq_length"] = 256;
    Json processor = Json::object();
    if (std::string(type) == "llava") processor = {{"patch_size", 14}, {"vision_feature_select_strategy", "default"}};
    auto p = make_image_processor({{"model_type", type}}, ip, processor, {}, "ckpt");
    EXPECT_EQ(p->process(gray(300, 200)).backend, backend);
    ProcessorOptions other;
    other.backend = backend == PixelBackend::kPil ? PixelBackend::kTorchvision : PixelBackend::kPil;
    if (std::string(type) == "idefics3" || std::string(type) == "smolvlm") continue;  // LANCZOS: the torchvision backend substitutes bicubic
    EXPECT_EQ(make_image_processor({{"model_type", type}}, ip, processor, other, "ckpt")->process(gray(300, 200)).backend,
              *other.backend);
  }
  const auto types = image_processor_model_types();
  EXPECT_EQ(types.size(), 7u);
}

TEST(ImageProcessorSelect, UnknownOrMissingModelTypeIsTyped) {
  Error e = error_of([] { make_image_processor({{"model_type", "mllama"}}, {}, {}, {}, "/m"); });
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  EXPECT_NE(std::string(e.what()).find("mllama"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("qwen2_vl"), std::string::npos) << e.what();
  e = error_of([] { make_image_processor(Json::object(), {}, {}, {}, "/m"); });
  EXPECT_EQ(e.kind(), ErrorKind::kFormat);
  EXPECT_NE(std::string(e.what()).find("model_type"), std::string::npos) << e.what();
}

TEST(ImageProcessorErrors, FieldsNamedWhenMissingOrIllTyped) {
  // PaliGemmaProcessor refuses an image processor without image_seq_length.
  Error e = error_of([] { make_image_processor({{"model_type", "paligemma"}}, Json::object(), {}, {}, "/pg"); });
  EXPECT_EQ(e.kind(), ErrorKind::kFormat);
  EXPECT_NE(std::string(e.what()).find("image_seq_length"), std::string::npos) << e.what();
  // LLaVA without patch_size anywhere.
  e = error_of([] { make_image_processor({{"model_type", "llava"}}, Json::object(), Json::object(), {}, "/llava"); });
  EXPECT_EQ(e.kind(), ErrorKind::kFormat);
  EXPECT_NE(std::string(e.what()).find("patch_size"), std::string::npos) << e.what();
  // Ill-typed fields.
  e = error_of([] { make_image_processor(kQwenConfig, {{"size", "big"}}, {}, {}, "/q"); });
  EXPECT_EQ(e.kind(), ErrorKind::kFormat);
  EXPECT_NE(std::string(e.what()).find("\"size\""), std::string::npos) << e.what();
  e = error_of([] { make_image_processor(kQwenConfig, {{"image_mean", {0.5, 0.5}}}, {}, {}, "/q"); });
  EXPECT_NE(std::string(e.what()).find("image_mean"), std::string::npos) << e.what();
  e = error_of([] { make_image_processor(kQwenConfig, {{"resample", 9}}, {}, {}, "/q"); });
  EXPECT_NE(std::string(e.what()).find("resample"), std::string::npos) << e.what();
  e = error_of([] { make_image_processor(kQwenConfig, {{"patch_size", 0}}, {}, {}, "/q"); });
  EXPECT_NE(std::string(e.what()).find("patch_size"), std::string::npos) << e.what();
  e = error_of([] { make_image_processor(kQwenConfig, {{"size", {{"shortest_edge", 3136}}}}, {}, {}, "/q"); });
  EXPECT_NE(std::string(e.what()).find("longest_edge"), std::string::npos) << e.what();
}

TEST(ImageProcessorErrors, QwenAspectRatioAbove200) {
  auto p = make_image_processor(kQwenConfig, kQwenIp, {}, {}, "/q");
  Error e = error_of([&] { p->process(gray(2010, 10)); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("aspect ratio"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("201"), std::string::npos) << e.what();
  EXPECT_NO_THROW(p->process(gray(2000, 10)));  // exactly 200 is allowed (transformers raises above 200)
}

TEST(ImageProcessorErrors, PlaceholderCountMismatchNamesBothCounts) {
  auto p = make_image_processor(kQwenConfig, kQwenIp, {}, {}, "/q");
  std::vector<ProcessedImage> one;
  one.push_back(p->process(gray(64, 64)));
  Error e = error_of([&] { p->expand_prompt("<|image_pad|> and <|image_pad|>", one); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("2 image placeholder"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 image"), std::string::npos) << msg;
  EXPECT_NE(msg.find("<|image_pad|>"), std::string::npos) << msg;
  e = error_of([&] { p->expand_prompt("no placeholder", one); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_EQ(p->expand_prompt("text only", {}), "text only");
}

TEST(ImageProcessorOptions, PixelBudgetFlagsActLikeTheConfig) {
  // --max-pixels / --min-pixels replace size.longest_edge / shortest_edge: identical output to a config
  // that says so, and a budget that binds changes the grid.
  const Image img = gray(1280, 720);
  ProcessorOptions o;
  o.max_pixels = 200704;
  o.min_pixels = 6272;
  auto flagged = make_image_processor(kQwenConfig, kQwenIp, {}, o, "/q");
  auto configured = make_image_processor(
      kQwenConfig, {{"size", {{"shortest_edge", 6272}, {"longest_edge", 200704}}}}, {}, {}, "/q");
  const ProcessedImage a = flagged->process(img), b = configured->process(img);
  EXPECT_TRUE(same_pixels(a, b));
  EXPECT_EQ(a.image_tokens, b.image_tokens);
  EXPECT_LE(a.processed_height * a.processed_width, 200704);
  EXPECT_EQ(a.image_tokens, a.grid_h * a.grid_w / 4);
  const ProcessedImage unbounded = make_image_processor(kQwenConfig, kQwenIp, {}, {}, "/q")->process(img);
  EXPECT_GT(unbounded.image_tokens, a.image_tokens);
  // min_pixels/max_pixels keys (older configs) override size too.
  auto legacy = make_image_processor(kQwenConfig, {{"min_pixels", 6272}, {"max_pixels", 200704}}, {}, {}, "/q");
  EXPECT_TRUE(same_pixels(legacy->process(img), a));
}

TEST(ImageProcessorOptions, ResizeShapePerFamily) {
  ProcessorOptions o;
  o.resize_height = 280;
  o.resize_width = 420;
  // Qwen: the requested size in whole 28-pixel merge blocks, budget ignored.
  const ProcessedImage q = make_image_processor(kQwenConfig, kQwenIp, {}, o, "/q")->process(gray(1000, 1000));
  EXPECT_EQ(q.processed_height, 280);
  EXPECT_EQ(q.processed_width, 420);
  EXPECT_EQ(q.image_tokens, (280 / 28) * (420 / 28));
  // Idefics3: replaces the longest-edge resize; tiling follows (280x700 → up to multiples of 364 keeping the
  // aspect ratio: 364x728 → 1 row x 2 cols + the global image).
  ProcessorOptions wide = o;
  wide.resize_width = 700;
  const ProcessedImage i = make_image_processor({{"model_type", "idefics3"}}, Json::object(), Json::object(), wide, "/i")
                               ->process(gray(1000, 1000));
  EXPECT_EQ(i.rows, 1);
  EXPECT_EQ(i.cols, 2);
  EXPECT_EQ(i.n_tiles, 3);
  EXPECT_EQ(i.image_tokens, 3 * 169);
  // Fixed-resolution families refuse another size, accept their own.
  Error e = error_of([&] { make_image_processor({{"model_type", "gemma3"}}, {{"size", {{"height", 896}, {"width", 896}}}}, {}, o, "/g"); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("896x896"), std::string::npos) << e.what();
  ProcessorOptions same;
  same.resize_height = 896;
  EXPECT_NO_THROW(make_image_processor({{"model_type", "gemma3"}}, {{"size", {{"height", 896}, {"width", 896}}}}, {}, same, "/g"));
}

TEST(ImageProcessorSelect, LlavaDefaultsFollowTheImageProcessorClass) {
  // A SiglipImageProcessor config that leaves out do_center_crop gets SigLIP's square resize without a crop,
  // not CLIP's 224-pixel centre crop.
  const Json processor = {{"patch_size", 14}, {"vision_feature_select_strategy", "full"}};
  auto sig = make_image_processor({{"model_type", "llava"}},
                                  {{"image_processor_type", "SiglipImageProcessor"}, {"size", {{"height", 384}, {"width", 384}}}},
                                  processor, {}, "/l");
  const ProcessedImage s = sig->process(gray(500, 300));
  EXPECT_EQ(s.processed_width, 384);
  EXPECT_EQ(s.processed_height, 384);
  EXPECT_EQ(s.image_tokens, (384 / 14) * (384 / 14));  // "full", no additional tokens configured
  auto clip = make_image_processor({{"model_type", "llava"}}, {{"size", {{"shortest_edge", 336}}},
                                   {"crop_size", {{"height", 336}, {"width", 336}}}}, processor, {}, "/l");
  const ProcessedImage c = clip->process(gray(500, 300));
  EXPECT_EQ(c.processed_width, 336);
  EXPECT_EQ(c.processed_height, 336);
}

TEST(ImageProcessorTokens, TakenFromTokenizerConfig) {
  // transformers 5 keeps model-specific tokens under extra_special_tokens; older files at the top level.
  const Json tok = {{"extra_special_tokens", {{"image_token", "<|img|>"}}}};
  auto q = make_image_processor(kQwenConfig, kQwenIp, {}, {}, "/q", tok);
  EXPECT_EQ(q->image_token(), "<|img|>");
  std::vector<ProcessedImage> one;
  one.push_back(q->process(gray(56, 56)));
  EXPECT_EQ(q->expand_prompt("a<|img|>b", one), "a<|img|><|img|><|img|><|img|>b");
  const Json gtok = {{"boi_token", {{"content", "<boi>"}, {"special", true}}}, {"eoi_token", "<eoi>"},
                     {"image_token", "<soft>"}};
  auto g = make_image_processor({{"model_type", "gemma3"}}, {{"size", {{"height", 28}, {"width", 28}}}},
                                {{"image_seq_length", 2}}, {}, "/g", gtok);
  std::vector<ProcessedImage> gi;
  gi.push_back(g->process(gray(40, 30)));
  EXPECT_EQ(g->expand_prompt("x<boi>y", gi), "x\n\n<boi><soft><soft><eoi>\n\ny");
  EXPECT_EQ(g->placeholder(), "<boi>");
  // Idefics3Processor hard-codes its tokens; SmolVLMProcessor takes them from the tokenizer.
  const Json itok = {{"image_token", "<img>"}, {"fake_image_token", "<f>"}, {"global_image_token", "<g>"}};
  const Json ip = {{"size", {{"longest_edge", 32}}}, {"max_image_size", {{"longest_edge", 32}}}};
  auto idefics = make_image_processor({{"model_type", "idefics3"}}, ip, {{"image_seq_len", 2}}, {}, "/i", itok);
  auto smol = make_image_processor({{"model_type", "smolvlm"}}, ip, {{"image_seq_len", 2}}, {}, "/s", itok);
  std::vector<ProcessedImage> ii;
  ii.push_back(idefics->process(gray(20, 20)));  // within one tile: no split
  EXPECT_EQ(idefics->expand_prompt("A<image>B", ii),
            "A<fake_token_around_image><global-img><image><image><fake_token_around_image>B");
  EXPECT_EQ(smol->expand_prompt("A<img>B", ii), "A<f><g><img><img><f>B");
  // PaliGemma: no <image> in the text → image tokens + BOS + text + "\n", encoded without special tokens.
  auto pg = make_image_processor({{"model_type", "paligemma"}},
                                 {{"size", {{"height", 28}, {"width", 28}}}, {"image_seq_length", 3}}, {}, {}, "/pg",
                                 {{"bos_token", "<s>"}});
  std::vector<ProcessedImage> pi;
  pi.push_back(pg->process(gray(30, 30)));
  EXPECT_EQ(pg->expand_prompt("caption en", pi), "<image><image><image><s>caption en\n");
  EXPECT_FALSE(pg->encode_with_special_tokens());
}

}  // namespace
}  // namespace vlm
