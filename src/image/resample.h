// PIL-exact resampling and the numeric steps image processors apply after it.
//
// resize_pil reproduces PIL 9.4 `Image.resize(size, resample, box, reducing_gap=None)` byte for byte on
// 8-bit images: separable convolution with the filter's support scaled by the downscale factor (PIL's
// antialiasing), coefficients normalised in double and rounded to 22-bit fixed point, the horizontal pass
// first over just the rows the vertical pass reads, uint8 rounding between passes. NEAREST is PIL's
// affine nearest-neighbour scaler. Images with alpha (2 or 4 channels, PIL LA/RGBA) are premultiplied
// before and un-premultiplied after, as PIL converts RGBA → RGBa → RGBA around the resize.
//
// The float steps follow transformers' numpy image_transforms: rescale multiplies in float64 and
// stores float32; normalize computes (x - mean) / std in float32; the result is channel-first.
#pragma once

#include <array>
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "image/image.h"

namespace vlm {

// PIL.Image.Resampling values.
enum class ResampleFilter { kNearest, kBox, kBilinear, kHamming, kBicubic, kLanczos };
const char* resample_filter_name(ResampleFilter f);
// "nearest" | "box" | "bilinear" | "hamming" | "bicubic" | "lanczos", or PIL's integer code
// (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING) as preprocessor configs store it.
ResampleFilter resample_filter_from_pil_code(int code);

// Region of the source to resample, in source pixels (PIL's `box`): left, top, right, bottom.
using ResampleBox = std::array<float, 4>;

// src: [h, w, c] u8 with c in {1, 2, 3, 4}; returns [out_h, out_w, c] u8.
Image resize_pil(const Image& src, int out_w, int out_h, ResampleFilter filter,
                 std::optional<ResampleBox> box = std::nullopt);

// torchvision.transforms.v2.functional.resize(uint8 [c, h, w] tensor, antialias=True) on CPU, the
// resize transformers 5's default "fast" processors run (Qwen2-VL, CLIP, SigLIP, Gemma 3): ATen's
// antialiased separable bilinear/bicubic with int16 fixed-point weights (precision chosen per axis),
// uint8 between passes, no alpha premultiplication. Differs from resize_pil by at most a level or so.
// Written from ATen's UpSampleKernel.cpp. Verified bit-exact on 3-channel images against torch 2.11 /
// torchvision 0.26 through transformers 5.17's fast processors (tests/unit/test_image_processor_photos.cpp):
// bicubic downscales of 6-14x (Qwen2-VL, CLIP, SigLIP), Idefics3's LANCZOS → BICUBIC chain (12.5x / 9.4x
// down, then 1.3x / 1.8x up along one axis, then 2x down), bilinear downscales of 9-25x (Gemma 3 with
// pan-and-scan crops), odd sizes. Those fixtures change in 40-980 values when the int16 precision is one
// bit below the one chosen here. Not checked: 1-, 2- and 4-channel inputs (processors only pass RGB).
Image resize_torchvision(const Image& src, int out_w, int out_h, ResampleFilter filter);

// transformers image_transforms.center_crop on [h, w, c]: crops the centred (out_h, out_w) window,
// zero-padding first where the crop is larger than the image (same offsets as transformers).
Image center_crop(const Image& src, int out_w, int out_h);

// A new out_w x out_h image filled with `fill` (per channel) with `src` pasted at (left, top).
Image pad_image(const Image& src, int out_w, int out_h, int left, int top, std::array<uint8_t, 4> fill = {0, 0, 0, 0});

// LLaVA's expand2square: paste into a max(w,h) square of `fill`, centred ((max-w)//2, (max-h)//2).
Image expand_to_square(const Image& src, std::array<uint8_t, 4> fill);

// [h, w, c] u8 → [c, h, w] f32 of float32(double(x) * scale) (transformers rescale).
Tensor rescale_to_chw(const Image& src, double scale = 1.0 / 255.0);
// In place on [c, h, w] f32: x = (x - mean[c]) / std[c] in float32 (transformers normalize).
void normalize_chw(Tensor& chw, const std::vector<float>& mean, const std::vector<float>& std);
// rescale_to_chw then normalize_chw: the PIL-backend processor tail.
Tensor to_normalized_chw(const Image& src, const std::vector<float>& mean, const std::vector<float>& std,
                         double scale = 1.0 / 255.0);

// The fast-processor tail: rescale and normalize fused as transformers does it — float32 mean and std
// multiplied by 1/rescale_factor, then (float(x) - mean') / std' in float32. [c, h, w] f32 out.
Tensor to_normalized_chw_torchvision(const Image& src, const std::vector<float>& mean, const std::vector<float>& std,
                                     double rescale_factor = 1.0 / 255.0);

}  // namespace vlm
