// Public entry of our Jinja interpreter for Hugging Face chat templates: parse once, render with JSON variables.
// Renders byte-identically to jinja2 3.1 driven as transformers drives it: ImmutableSandboxedEnvironment with
// trim_blocks, lstrip_blocks and loopcontrols, transformers' `tojson` filter (json.dumps, ensure_ascii=False),
// and the globals raise_exception(msg) and strftime_now(fmt). Templates cannot reach files; loop iterations,
// macro recursion and output size are bounded (Error kResource). Errors carry origin:line:col.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/json.h"

namespace vlm::jinja {

struct Node;

struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;  // rendered text and any intermediate string
  int64_t max_iterations = 10'000'000;        // loop iterations plus items that filters walk
  int max_call_depth = 256;                    // nested macro calls
};

struct RenderOptions {
  RenderLimits limits;
  // Seconds since the epoch that strftime_now() formats (local time); null: the current time.
  std::optional<int64_t> now_unix;
};

class Template {
 public:
  // Parses `source`; `origin` names it in errors (a file path). Throws Error(kFormat) on syntax errors.
  Template(const std::string& source, std::string origin);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // `variables` must be a JSON object; its members become template variables (Python values from json.loads).
  std::string render(const Json& variables, const RenderOptions& opts = {}) const;
  const std::string& origin() const { return origin_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string origin_;
};

}  // namespace vlm::jinja
