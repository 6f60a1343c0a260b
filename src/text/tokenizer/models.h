// Tokenizer models built from tokenizer.json "model": BPE (byte-level or SentencePiece-style with
// byte fallback), Unigram (Viterbi) and WordPiece. Each reproduces HF `tokenizers` exactly,
// including its unk / fuse_unk / byte-fallback corner cases.
#pragma once

#include <memory>

#include "text/tokenizer/components.h"
#include "text/tokenizer/json_util.h"

namespace vlm::tok {

std::unique_ptr<Model> make_model(JsonElement model, const JsonPath& at);

}  // namespace vlm::tok
