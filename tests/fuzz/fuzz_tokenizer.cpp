// libFuzzer target for the tokenizer. The first input byte picks a mode:
//   0: the rest is a tokenizer.json to load (then encode/decode a fixed text with it);
//   1-4: the rest is text for one of four built-in tokenizers (byte-level BPE with the Qwen regex,
//        Metaspace BPE with byte fallback, Unigram, WordPiece): encode, decode random ids derived from
//        the input, and stream-decode — the stream must equal the full decode.
// Any input must either work or throw vlm::Error; crashes, sanitizer reports and other exceptions are bugs.
// Built by tests/fuzz/run_fuzz.sh against the text layer only (the same objects fuzz_jinja links):
//   fuzz-links: vlm_text
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "text/tokenizer.h"

namespace {

const char* kByteLevel = R"({"added_tokens":[{"id":300,"content":"<|im_start|>","special":true,"normalized":false,"lstrip":false,"rstrip":false,"single_word":false},
 {"id":301,"content":"[W]","special":false,"normalized":true,"lstrip":true,"rstrip":true,"single_word":true}],
 "normalizer":{"type":"NFC"},
 "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]},
 "post_processor":{"type":"ByteLevel"},"decoder":{"type":"ByteLevel"},
 "model":{"type":"BPE","vocab":VOCAB_BYTES,"merges":["\u0120 t","h e","\u0120t he"]}})";

const char* kMetaspace = R"({"added_tokens":[{"id":0,"content":"<unk>","special":true,"normalized":false,"lstrip":false,"rstrip":false,"single_word":false}],
 "normalizer":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Lowercase"},{"type":"Replace","pattern":{"Regex":"\\s+"},"content":" "}]},
 "pre_tokenizer":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":true},
 "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<unk>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<unk>":{"id":"<unk>","ids":[0],"tokens":["<unk>"]}}},
 "decoder":{"type":"Sequence","decoders":[{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first","split":true},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
 "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"fuse_unk":true,"vocab":VOCAB_HEX,"merges":[]}})";

const char* kUnigram = R"({"added_tokens":[],"normalizer":{"type":"NFKD"},
 "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Digits","individual_digits":true},{"type":"Punctuation","behavior":"Contiguous"}]},
 "decoder":{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Fuse"}]},
 "model":{"type":"Unigram","unk_id":0,"byte_fallback":true,"vocab":VOCAB_UNIGRAM}})";

const char* kWordPiece = R"({"added_tokens":[],"normalizer":{"type":"BertNormalizer","lowercase":true},
 "pre_tokenizer":{"type":"BertPreTokenizer"},
 "post_processor":{"type":"BertProcessing","sep":["[SEP]",2],"cls":["[CLS]",1]},
 "decoder":{"type":"WordPiece","prefix":"##","cleanup":true},
 "model":{"type":"WordPiece","unk_token":"[UNK]","max_input_chars_per_word":20,"vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"a":3,"##a":4,"b":5,"##b":6,"the":7,".":8}}})";

std::string hex_vocab() {
  std::string v = "{\"<unk>\":0";
  for (int b = 0; b < 256; ++b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, ",\"<0x%02X>\":%d", b, b + 1);
    v += buf;
  }
  return v + ",\"\\u2581\":257,\"a\":258,\"e\":259}";
}

std::string byte_vocab() {
  // GPT-2 byte characters as JSON \u escapes, then the merged tokens.
  std::string v = "{";
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : next++;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s\"\\u%04X\":%d", b ? "," : "", cp, b);
    v += buf;
  }
  return v + ",\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258}";
}

std::string unigram_vocab() {
  std::string v = "[[\"<unk>\",0.0]";
  for (int b = 0; b < 256; ++b) {
    char buf[40];
    std::snprintf(buf, sizeof buf, ",[\"<0x%02X>\",-10.0]", b);
    v += buf;
  }
  return v + ",[\"a\",-1.0],[\"ab\",-1.5],[\"b\",-2.0],[\"the\",-1.2],[\"1\",-3.0]]";
}

std::string fill_in(std::string t, const char* key, const std::string& value) {
  t.replace(t.find(key), std::string_view(key).size(), value);
  return t;
}

const vlm::Tokenizer& builtin(int which) {
  static const std::unique_ptr<vlm::Tokenizer> toks[4] = {
      vlm::Tokenizer::from_json_text(fill_in(kByteLevel, "VOCAB_BYTES", byte_vocab()), "fuzz-bytelevel"),
      vlm::Tokenizer::from_json_text(fill_in(kMetaspace, "VOCAB_HEX", hex_vocab()), "fuzz-metaspace"),
      vlm::Tokenizer::from_json_text(fill_in(kUnigram, "VOCAB_UNIGRAM", unigram_vocab()), "fuzz-unigram"),
      vlm::Tokenizer::from_json_text(kWordPiece, "fuzz-wordpiece"),
  };
  return *toks[which];
}

void exercise(const vlm::Tokenizer& tok, std::string_view text, const uint8_t* data, size_t size) {
  try {
    auto ids = tok.encode(text, true);
    const std::string back = tok.decode(ids, false);
    (void)back;
  } catch (const vlm::Error&) {
  }
  // Ids from the raw bytes: covers invalid UTF-8 from byte fallback and out-of-range ids.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) ids.push_back(static_cast<int32_t>((data[i] << 8 | data[i + 1]) % 400) - 10);
  (void)tok.decode(ids, false);
  // The stream is checked on the first 512 ids: for decoder chains where no window is exact (a Replace after
  // Fuse) every push decodes everything so far, which is quadratic by design and would turn long inputs into
  // timeouts rather than findings.
  if (ids.size() > 512) ids.resize(512);
  for (bool skip : {false, true}) {
    const std::string full = tok.decode(ids, skip);
    vlm::StreamingDecoder stream(tok, skip);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    if (streamed != full) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 5;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode == 0) {
    std::unique_ptr<vlm::Tokenizer> tok;
    try {
      tok = vlm::Tokenizer::from_json_text(rest, "fuzz-input");
    } catch (const vlm::Error&) {
      return 0;
    }
    exercise(*tok, "Hello world <|im_start|> 123 \xE4\xBD\xA0\xE5\xA5\xBD", data, size);
    return 0;
  }
  exercise(builtin(mode - 1), rest, data + 1, size - 1);
  return 0;
}
