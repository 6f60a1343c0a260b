// libFuzzer target for the Jinja interpreter: the input is split at the first NUL into a template and a JSON
// document of variables (invalid JSON: a fixed conversation). Parsing and rendering must either succeed or throw
// vlm::Error; tight limits keep each run short. Built by tests/fuzz/run_fuzz.sh against the text layer only:
//   fuzz-links: vlm_text
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/json.h"
#include "text/jinja/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  std::string source = input.substr(0, nul);
  vlm::Json vars;
  if (nul != std::string::npos) vars = vlm::Json::parse(input.substr(nul + 1), nullptr, false);
  if (!vars.is_object()) {
    vars = {{"messages", vlm::Json::array({{{"role", "system"}, {"content", "s"}},
                                            {{"role", "user"}, {"content", vlm::Json::array({{{"type", "image"}},
                                                                                              {{"type", "text"}, {"text", "hi"}}})}},
                                            {{"role", "assistant"}, {"content", "ok"}}})},
            {"add_generation_prompt", true},
            {"bos_token", "<s>"},
            {"tools", nullptr}};
  }
  vlm::jinja::RenderOptions opts;
  opts.limits.max_output_bytes = 1 << 20;
  opts.limits.max_iterations = 100000;
  opts.limits.max_call_depth = 64;
  opts.now_unix = 0;
  try {
    vlm::jinja::Template t(source, "fuzz");
    (void)t.render(vars, opts);
  } catch (const vlm::Error&) {
  }
  return 0;
}
