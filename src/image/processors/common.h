// Shared pieces of the per-family image processors (private to src/image/processors/): typed reads of
// preprocessor/processor/tokenizer config fields with transformers' defaults and conventions (size dicts,
// PIL resample codes, scalar-or-list means), the two pixel backends (resize + rescale/normalise exactly as
// transformers' PilBackend / TorchvisionBackend do them), and ordered placeholder replacement.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "image/image.h"
#include "image/processor.h"
#include "image/resample.h"

namespace vlm::proc {

// Everything a family factory reads. `what` names the checkpoint folder in errors; the *_what strings name
// the file a field comes from.
struct Sources {
  const Json& model_config;
  const Json& image_processor;
  const Json& processor;
  const Json& tokenizer_config;
  std::string what;
  std::string config_what() const { return what + "/config.json"; }
  std::string image_what() const { return what + " image processor config"; }
  std::string processor_what() const { return what + " processor config"; }
  std::string tokenizer_what() const { return what + "/tokenizer_config.json"; }
};

// transformers' SizeDict after get_size_dict: any subset of the keys.
struct SizeSpec {
  std::optional<int64_t> height, width, shortest_edge, longest_edge;
};
// Reads size-like field `key` of `obj`: an object with height/width/shortest_edge/longest_edge (also the
// old "min_pixels"/"max_pixels" spellings are left to the caller), an int (→ {height, width} when
// default_to_square, else {shortest_edge}), or a [h, w] list. Absent → nullopt.
std::optional<SizeSpec> read_size(const Json& obj, const std::string& key, bool default_to_square,
                                  const std::string& what);

// image_mean / image_std: a number (broadcast to 3 channels) or a list of 3 numbers; absent → `def`.
std::vector<float> read_channel_values(const Json& obj, const std::string& key, const std::vector<float>& def,
                                       const std::string& what);
// "resample": PIL code (int) or name; absent → `def`.
ResampleFilter read_resample(const Json& obj, const std::string& key, ResampleFilter def, const std::string& what);
bool read_bool(const Json& obj, const std::string& key, bool def, const std::string& what);
int64_t read_int(const Json& obj, const std::string& key, int64_t def, const std::string& what);
double read_number(const Json& obj, const std::string& key, double def, const std::string& what);
// A positive integer field (errors name the field when it is zero or negative).
int64_t read_positive(const Json& obj, const std::string& key, int64_t def, const std::string& what);

// A tokenizer attribute as transformers 5 exposes it: tokenizer_config.json top-level `key` (a string or an
// AddedToken object with "content"), else "extra_special_tokens"[key], else `def`.
std::string tokenizer_token(const Json& tokenizer_config, const std::string& key, const std::string& def,
                            const std::string& what);

// The per-channel float steps after resizing.
struct Normalization {
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<float> mean, std;
};
Normalization read_normalization(const Json& ip, const std::vector<float>& default_mean,
                                 const std::vector<float>& default_std, const std::string& what);

// Resize with the backend's kernel: PIL → resize_pil; torchvision → resize_torchvision, with transformers'
// LANCZOS → BICUBIC fallback (TorchvisionBackend.resize). Unavailable filters → Error(kUnsupported).
Image backend_resize(const Image& src, int out_w, int out_h, ResampleFilter filter, PixelBackend backend);
// [h, w, 3] u8 → [3, h, w] f32 by the backend's arithmetic: PIL = numpy rescale (float64 → float32) then
// float32 normalize; torchvision = fused (mean, std scaled by 1/rescale_factor in float32).
Tensor backend_normalize(const Image& src, const Normalization& n, PixelBackend backend);
// backend_normalize as a table: [3, 256] f32 with lut[c * 256 + v] = the value backend_normalize gives a
// channel-c byte v (each output depends only on its channel and byte, in every backend and rescale/normalise
// combination), for processors that write the normalised pixels straight into their own layout.
std::vector<float> normalization_lut(const Normalization& n, PixelBackend backend);
// Stacks equally sized [3, h, w] f32 tiles into [n, 3, h, w].
Tensor stack_tiles(const std::vector<Tensor>& tiles);
// The rectangle [x, x + w) x [y, y + h) of src, clipped to the image like a numpy slice.
Image crop_clipped(const Image& src, int x, int y, int w, int h);

// Replaces, left to right, each occurrence of `placeholder` in `text` by expansion(i) for image i. The
// number of occurrences must equal n_images (Error(kInvalidArgument) naming both counts and the token).
std::string replace_placeholders(const std::string& text, const std::string& placeholder, size_t n_images,
                                 const std::function<std::string(size_t)>& expansion, const std::string& family);
size_t count_occurrences(const std::string& text, const std::string& needle);
std::string repeat(const std::string& s, int64_t n);

// The family's default backend unless the options override it.
inline PixelBackend pick_backend(const ProcessorOptions& o, PixelBackend family_default) {
  return o.backend.value_or(family_default);
}

// Factories, one per family file.
std::unique_ptr<ImageProcessor> make_qwen2_vl(const Sources& s, const ProcessorOptions& o);
std::unique_ptr<ImageProcessor> make_idefics3(const Sources& s, const ProcessorOptions& o);
std::unique_ptr<ImageProcessor> make_smolvlm(const Sources& s, const ProcessorOptions& o);
std::unique_ptr<ImageProcessor> make_llava(const Sources& s, const ProcessorOptions& o);
std::unique_ptr<ImageProcessor> make_gemma3(const Sources& s, const ProcessorOptions& o);
std::unique_ptr<ImageProcessor> make_paligemma(const Sources& s, const ProcessorOptions& o);

// Fixed-resolution families: --resize-shape must name the size the encoder takes.
void check_fixed_resize_shape(const ProcessorOptions& o, int64_t height, int64_t width, const std::string& family);

// The pixel steps of the SigLIP image processor (Gemma 3, PaliGemma): resize to a fixed size, rescale,
// normalise with mean = std = 0.5 by default.
struct FixedResize {
  bool do_resize = true;
  int height = 224, width = 224;
  ResampleFilter resample = ResampleFilter::kBilinear;
  Normalization norm;
  PixelBackend backend = PixelBackend::kTorchvision;
  // `image` at height x width (unchanged when it has that size or do_resize is off).
  Image resize(const Image& image) const;
  // The resized image normalised: [3, h, w] f32.
  Tensor pixels(const Image& resized) const { return backend_normalize(resized, norm, backend); }
};
// Reads do_resize, size (height and width; 224 x 224 when absent), resample (default_resample when absent)
// and the normalisation from the image processor config; torchvision unless the options pick a backend;
// checks --resize-shape against the size.
FixedResize read_fixed_resize(const Sources& s, const ProcessorOptions& o, ResampleFilter default_resample,
                              const std::string& family);

}  // namespace vlm::proc
