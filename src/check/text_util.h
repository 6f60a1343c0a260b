// Small text helpers shared by the checker's prompts, analysis and renderers: whitespace
// collapsing, UTF-8-aware truncation, escaping for HTML / Markdown tables, base64, path
// sanitising for public artefacts, and check_models' number formats (§5.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlm::check {

std::string collapse_whitespace(std::string_view s);  // runs of whitespace → one space, trimmed
std::string trim(std::string_view s);
std::string lower_ascii(std::string_view s);
// Cuts to at most `max_chars` code points; adds "..." (within the limit) when cut.
std::string truncate_chars(std::string_view s, size_t max_chars, bool ellipsis = true);
size_t utf8_length(std::string_view s);
std::vector<std::string> split(std::string_view s, char sep);
bool contains_ci(std::string_view hay, std::string_view needle);
bool starts_with(std::string_view s, std::string_view p);
bool ends_with(std::string_view s, std::string_view p);

std::string html_escape(std::string_view s);  // & < > " '
// A Markdown table cell: pipes escaped, newlines as <br>, HTML other than b/i/em/strong/code/br escaped.
std::string md_cell(std::string_view s);
// Inline Markdown text outside tables: HTML-escapes '<' and '>' (so model tokens like <s> show) and
// escapes underscores runs and backticks that would change rendering.
std::string md_text(std::string_view s);
// A fenced block whose backtick run is longer than any run inside `content`.
std::string md_fence(std::string_view content, std::string_view lang = "text");
std::string slugify(std::string_view s);  // "org/Name-1.5B" → "org-name-1-5b"

std::string base64_encode(std::string_view bytes);
// $HOME → "~" and /home/<user>, /Users/<user> → "~" for public artefacts.
std::string sanitize_path(std::string_view path);

// Number formats: memory GB (≥10 integer, ≥1 one decimal, else two), tokens/s (≥100 integer with
// thousands separators, ≥10 one decimal, else 3 significant figures), seconds "%.2fs".
std::string fmt_gb(double gb);
std::string fmt_tps(double tps);
std::string fmt_seconds(double s);
std::string fmt_int(int64_t v);  // 12,345

}  // namespace vlm::check
