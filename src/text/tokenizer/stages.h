// Factories for the tokenizer.json stages other than the model: normalizer, pre_tokenizer,
// post_processor and decoder. Each accepts HF's JSON (including the older field spellings that
// tokenizers still reads) and throws Error(kFormat) naming the file and JSON path on bad input.
#pragma once

#include <functional>
#include <memory>

#include "text/tokenizer/components.h"
#include "text/tokenizer/json_util.h"
#include "text/tokenizer/regex.h"

namespace vlm::tok {

// {"String": s} or {"Regex": r} (Split, Replace).
Pattern make_pattern(JsonElement e, const JsonPath& at);

std::unique_ptr<Normalizer> make_normalizer(JsonElement e, const JsonPath& at);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(JsonElement e, const JsonPath& at);
std::unique_ptr<PostProcessor> make_post_processor(JsonElement e, const JsonPath& at);
std::unique_ptr<Decoder> make_decoder(JsonElement e, const JsonPath& at);

// A post-processor that surrounds the sequence with fixed ids: transformers' update_post_processor
// builds this from add_bos_token / add_eos_token.
std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int32_t> prefix, std::vector<int32_t> suffix);

// GPT-2's byte ↔ printable-code-point table used by ByteLevel.
char32_t byte_to_char(uint8_t b);
int byte_from_char(char32_t c);  // -1 when c is not in the table

}  // namespace vlm::tok
