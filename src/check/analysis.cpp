// The detectors of analysis.h. Word logic treats non-ASCII bytes as word characters (Python's \w
// is Unicode-aware); regexes are std::regex over bytes, applied line by line where check_models
// uses multiline mode.
#include "check/analysis.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "check/text_util.h"

namespace vlm::check {
namespace {

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

// Words as \b\w+\b; with `joiners`, words joined by - ' ’ count as one (the title-word rule).
std::vector<std::string> words_of(const std::string& text_in, bool joiners = false) {
  std::string text = text_in;
  if (joiners) {
    for (size_t p = text.find("\xE2\x80\x99"); p != std::string::npos; p = text.find("\xE2\x80\x99", p))
      text.replace(p, 3, "'");
  }
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    if (!is_word_byte(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    size_t b = i;
    for (;;) {
      while (i < text.size() && is_word_byte(static_cast<unsigned char>(text[i]))) ++i;
      if (joiners && i + 1 < text.size() && (text[i] == '-' || text[i] == '\'') &&
          is_word_byte(static_cast<unsigned char>(text[i + 1]))) {
        ++i;
        continue;
      }
      break;
    }
    out.push_back(text.substr(b, i - b));
  }
  return out;
}

std::vector<std::string> ws_tokens(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

void erase_all(std::string& s, const std::string& what) {
  if (what.empty()) return;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p)) s.erase(p, what.size());
}

size_t find_ci(const std::string& hay, const std::string& needle, size_t from = 0) {
  return lower_ascii(hay).find(lower_ascii(needle), from);
}

// Spaces and tabs collapsed, lines kept (section parsing needs them), blank-line runs reduced.
std::string collapse_keep_lines(const std::string& s) {
  std::string out;
  for (const auto& line : split(s, '\n')) {
    std::string c = collapse_whitespace(line);
    if (c.empty() && (out.empty() || ends_with(out, "\n\n"))) continue;
    out += c + "\n";
  }
  return trim(out);
}

const std::regex& section_regex() {
  static const std::regex re(
      R"(^\s*(?:[-*>]\s+)?(?:#{1,6}\s*)?\*{0,2}\s*(title|description|keywords)\s*\*{0,2}\s*:\s*\*{0,2}\s*(.*)$)",
      std::regex::icase);
  return re;
}

const std::regex& control_wrapper_regex() {
  static const std::regex re(R"(<\|[^\s<>|]{1,80}(?:\|>|>)|<[^\s<>|]{1,80}\|>)");
  return re;
}

std::pair<int64_t, int64_t> parse_range(const std::string& line, bool* ok) {
  static const std::regex re(R"((\d+)\s*(?:-|\xE2\x80\x93)\s*(\d+))");
  std::smatch m;
  *ok = std::regex_search(line, m, re);
  if (!*ok) return {0, 0};
  return {std::stoll(m[1]), std::stoll(m[2])};
}

std::vector<std::string> split_keywords(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ',' || c == '\n') {
      if (!trim(cur).empty()) out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty()) out.push_back(trim(cur));
  for (auto& k : out) {  // drop list bullets and surrounding emphasis
    while (!k.empty() && (k.front() == '-' || k.front() == '*' || k.front() == ' ')) k.erase(0, 1);
    while (!k.empty() && (k.back() == '*' || k.back() == '.' || k.back() == ' ')) k.pop_back();
  }
  out.erase(std::remove_if(out.begin(), out.end(), [](const std::string& k) { return k.empty(); }), out.end());
  return out;
}

// Repetition: single-token dominance, catalogue keyword duplication, then phrase n-grams.
bool detect_repetition(const std::string& text, const std::vector<std::pair<std::string, std::string>>& sections,
                       const QualityThresholds& q, std::string* fragment) {
  auto toks = ws_tokens(text);
  if (static_cast<int>(text.size()) < q.min_text_length || static_cast<int>(toks.size()) < q.min_token_count)
    return false;
  std::map<std::string, int> counts;
  for (const auto& t : toks) ++counts[t];
  auto top = std::max_element(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second < b.second; });
  if (static_cast<double>(top->second) / static_cast<double>(toks.size()) >= q.repetition_ratio) {
    *fragment = fmt::format("token: \"{}\"", truncate_chars(top->first, 30, false));
    return true;
  }
  for (const auto& [label, body] : sections) {
    if (label != "keywords") continue;
    std::vector<std::string> items;
    for (const auto& k : split_keywords(body)) items.push_back(normalize_term(k));
    if (static_cast<int>(items.size()) < q.min_catalog_keywords_for_repeat) break;
    std::map<std::string, int> kc;
    for (const auto& k : items) ++kc[k];
    auto kt = std::max_element(kc.begin(), kc.end(), [](auto& a, auto& b) { return a.second < b.second; });
    double dup_ratio = static_cast<double>(items.size() - kc.size()) / static_cast<double>(items.size());
    if (kt->second >= q.min_catalog_keyword_repetitions && dup_ratio >= q.catalog_keyword_duplicate_ratio) {
      *fragment = fmt::format("keyword: \"{}\"", truncate_chars(kt->first, 30, false));
      return true;
    }
    break;
  }
  std::vector<std::string> words;
  for (const auto& w : words_of(lower_ascii(text))) words.push_back(w);
  const int64_t nw = static_cast<int64_t>(words.size());
  if (nw < 8) return false;
  const int64_t max_n = std::min<int64_t>(q.max_phrase_length, nw / 2 - 1);
  for (int64_t n = q.min_phrase_length; n <= max_n; ++n) {
    std::map<std::string, int64_t> grams;
    for (int64_t i = 0; i + n <= nw; ++i) {
      std::string g;
      for (int64_t k = 0; k < n; ++k) g += (k ? " " : "") + words[static_cast<size_t>(i + k)];
      ++grams[g];
    }
    auto gt = std::max_element(grams.begin(), grams.end(), [](auto& a, auto& b) { return a.second < b.second; });
    double coverage = static_cast<double>(gt->second * n) / static_cast<double>(nw);
    if (gt->second > q.max_phrase_repetitions ||
        (gt->second > q.min_phrase_repetitions && coverage > q.phrase_coverage_threshold)) {
      *fragment = fmt::format("phrase: \"{}...\"", truncate_chars(gt->first, 30, false));
      return true;
    }
  }
  return false;
}

// 8-word spans of the instruction lines of the prompt (context and hint lines excluded).
std::set<std::string> prompt_spans(const std::string& prompt, const std::string& context_marker) {
  std::set<std::string> spans;
  for (const auto& line : split(prompt, '\n')) {
    std::string t = trim(line);
    std::string lt = lower_ascii(t);
    if (starts_with(t, context_marker) || lt.find("hint") != std::string::npos ||
        starts_with(lt, "- capture date") || starts_with(lt, "- gps"))
      continue;
    auto w = words_of(lower_ascii(t));
    for (size_t i = 0; i + 8 <= w.size(); ++i) {
      std::string s;
      for (size_t k = 0; k < 8; ++k) s += (k ? " " : "") + w[i + k];
      spans.insert(s);
    }
  }
  return spans;
}

}  // namespace

const std::vector<ThinkingPair>& default_thinking_pairs() {
  static const std::vector<ThinkingPair> k = {
      {"<think>", "</think>", false, true},
      {"\xE2\x97\x81think\xE2\x96\xB7", "\xE2\x97\x81/think\xE2\x96\xB7", false, true},
      {"<|channel>thought", "<channel|>", true, false},
      {"<|START_THINKING|>", "<|END_THINKING|>", false, true},
  };
  return k;
}

std::string normalize_term(const std::string& s) {
  std::string out;
  for (char c : lower_ascii(s)) out += is_word_byte(static_cast<unsigned char>(c)) && c != '_' ? c : ' ';
  return collapse_whitespace(out);
}

std::vector<std::pair<std::string, std::string>> parse_catalog_sections(const std::string& text,
                                                                        std::string* preamble) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string pre, *current = nullptr;
  bool skipping = false;  // inside a repeated label's body (first occurrence wins)
  for (const auto& line : split(text, '\n')) {
    std::smatch m;
    if (std::regex_match(line, m, section_regex())) {
      std::string label = lower_ascii(m[1].str());
      auto it = std::find_if(out.begin(), out.end(), [&](auto& p) { return p.first == label; });
      if (it == out.end()) {
        out.emplace_back(label, trim(m[2].str()));
        current = &out.back().second;
        skipping = false;
      } else {
        current = nullptr;
        skipping = true;
      }
      continue;
    }
    if (current) {
      *current += "\n" + line;
    } else if (!skipping && out.empty()) {
      pre += line + "\n";
    }
  }
  for (auto& [label, body] : out) {
    body = trim(body);
    while (ends_with(body, "**")) body = trim(body.substr(0, body.size() - 2));
  }
  if (preamble) *preamble = trim(pre);
  return out;
}

TextAnalysis analyze_generation_text(const AnalysisInput& in, const QualityThresholds& q) {
  TextAnalysis a;
  const std::string& raw = in.text;
  std::vector<std::string> thinking_markers;
  for (const auto& p : in.thinking_pairs) {
    thinking_markers.push_back(p.start);
    thinking_markers.push_back(p.end);
  }
  auto is_thinking_marker = [&](const std::string& w) {
    return std::find(thinking_markers.begin(), thinking_markers.end(), w) != thinking_markers.end();
  };

  // 1. Declared wrappers out (thinking markers protected), remembered for the role-token check.
  std::string text = raw;
  std::vector<std::string> removed;
  for (const auto& w : in.declared_wrappers) {
    if (w.empty() || is_thinking_marker(w) || text.find(w) == std::string::npos) continue;
    removed.push_back(w);
    erase_all(text, w);
  }
  // 2. Final-answer view: complete thinking blocks out; a template-seeded open block ends at the first end marker.
  std::string rtrim_prompt = in.rendered_prompt;
  while (!rtrim_prompt.empty() && std::isspace(static_cast<unsigned char>(rtrim_prompt.back()))) rtrim_prompt.pop_back();
  const ThinkingPair* seeded = nullptr;
  for (const auto& p : in.thinking_pairs)
    if (!rtrim_prompt.empty() && ends_with(rtrim_prompt, p.start)) seeded = &p;
  if (seeded) {
    size_t e = find_ci(text, seeded->end);
    a.thinking_present = true;
    a.thinking_markers.push_back(seeded->start);
    if (e == std::string::npos) {
      a.thinking_incomplete = true;
    } else {
      text.erase(0, e + seeded->end.size());
      a.thinking_markers.push_back(seeded->end);
      if (std::none_of(text.begin(), text.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }))
        a.thinking_only = true;
    }
  }
  for (const auto& p : in.thinking_pairs) {
    size_t s = find_ci(raw, p.start);
    if (s == std::string::npos) continue;
    size_t e = find_ci(raw, p.end, s + p.start.size());
    std::string between = e == std::string::npos ? "" : trim(raw.substr(s + p.start.size(), e - s - p.start.size()));
    if (e != std::string::npos && between.empty() && !p.empty_wrapper_is_leak) {
      // An empty <think></think> is neutral, and not a trace.
    } else if (!(e != std::string::npos && between.empty())) {
      a.thinking_present = true;
      a.thinking_markers.push_back(p.start);
      if (e == std::string::npos) {
        a.thinking_incomplete = true;
      } else {
        a.thinking_markers.push_back(p.end);
        std::string after = raw.substr(e + p.end.size());
        if (std::none_of(after.begin(), after.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }))
          a.thinking_only = true;
      }
    }
    // Remove complete blocks (non-greedy) from the analysis copy; empty wrappers go too (step 3).
    for (size_t bs = find_ci(text, p.start); bs != std::string::npos; bs = find_ci(text, p.start)) {
      size_t be = find_ci(text, p.end, bs + p.start.size());
      if (be == std::string::npos) break;
      text.erase(bs, be + p.end.size() - bs);
    }
  }
  // 4. Generic control wrappers out.
  text = std::regex_replace(text, control_wrapper_regex(), "");
  a.analysis_text = collapse_keep_lines(text);
  a.is_empty = a.analysis_text.empty() && !a.thinking_only;
  a.word_count = static_cast<int64_t>(words_of(a.analysis_text).size());

  // Prompt burden estimates.
  a.text_tokens_est = static_cast<int64_t>(
      std::ceil(static_cast<double>(words_of(in.prompt).size()) * q.prompt_word_to_token_ratio));
  a.nontext_tokens_est = std::max<int64_t>(in.prompt_tokens - a.text_tokens_est, 0);

  // Sections and contract.
  std::string lp = lower_ascii(in.prompt);
  a.contract_requested = lp.find("title:") != std::string::npos && lp.find("description:") != std::string::npos &&
                         lp.find("keywords:") != std::string::npos &&
                         (lp.find("return exactly these three sections") != std::string::npos ||
                          lp.find("catalog") != std::string::npos);
  std::string preamble;
  auto sections = parse_catalog_sections(a.analysis_text, &preamble);
  auto section = [&](const char* label) -> std::optional<std::string> {
    for (auto& [l, b] : sections)
      if (l == label) return b;
    return std::nullopt;
  };
  if (a.contract_requested && !a.is_empty) {
    for (auto [label, name] : {std::pair{"title", "Title"}, {"description", "Description"}, {"keywords", "Keywords"}}) {
      auto s = section(label);
      bool multi_line_title = false;
      if (s && std::string(label) == "title") {
        int lines = 0;
        for (const auto& l : split(*s, '\n'))
          if (!trim(l).empty()) ++lines;
        multi_line_title = lines > 1;
      }
      if (!s || trim(*s).empty() || multi_line_title) a.missing_sections.push_back(name);
    }
    if (!sections.empty() && !preamble.empty()) {
      a.has_preamble = true;
      a.preamble = truncate_chars(preamble, 120);
    }
  }
  // Constraints: only with the contract and all three sections present.
  if (a.contract_requested && a.missing_sections.empty() && sections.size() >= 3) {
    bool after_write = false, have_title = false, have_kw = false;
    for (const auto& line : split(in.prompt, '\n')) {
      std::string t = trim(line), lt = lower_ascii(t);
      if (t == "Write:") {
        after_write = true;
        continue;
      }
      if (!after_write || lt.find("hint") != std::string::npos) continue;
      bool ok = false;
      if (!have_title && lt.find("title") != std::string::npos) {
        auto r = parse_range(t, &ok);
        if (ok) a.title_word_range = r;
        have_title = true;
      } else if (!have_kw && lt.find("keyword") != std::string::npos) {
        auto r = parse_range(t, &ok);
        if (ok) a.keyword_count_range = r;
        have_kw = true;
      }
    }
    a.title_word_count = static_cast<int64_t>(words_of(*section("title"), true).size());
    auto kws = split_keywords(*section("keywords"));
    a.keyword_count = static_cast<int64_t>(kws.size());
    std::set<std::string> seen;
    for (const auto& k : kws) {
      std::string n = normalize_term(k);
      if (!seen.insert(n).second &&
          std::find(a.duplicate_keywords.begin(), a.duplicate_keywords.end(), n) == a.duplicate_keywords.end())
        a.duplicate_keywords.push_back(n);
    }
    auto outside = [](int64_t v, const std::optional<std::pair<int64_t, int64_t>>& r) {
      return r && (v < r->first || v > r->second);
    };
    a.constraint_violation = outside(*a.title_word_count, a.title_word_range) ||
                             outside(*a.keyword_count, a.keyword_count_range) || !a.duplicate_keywords.empty();
  }

  a.repetitive = detect_repetition(a.analysis_text, sections, q, &a.repeated_fragment);

  // Instruction echo: literal markers, or an 8-word span shared with an instruction line.
  static const char* kEchoMarkers[] = {"return exactly these three sections", "prompt instructions",
                                       "do not output reasoning", "do not copy context hints verbatim",
                                       "context: existing metadata hints", "title hint:", "description hint:",
                                       "keyword hints:", "capture metadata:"};
  std::string lt = lower_ascii(a.analysis_text);
  for (const char* m : kEchoMarkers)
    if (lt.find(m) != std::string::npos && a.echo_fragments.size() < 4) a.echo_fragments.push_back(m);
  if (a.echo_fragments.size() < 4) {
    auto spans = prompt_spans(in.prompt, in.context_marker);
    auto w = words_of(lt);
    for (size_t i = 0; i + 8 <= w.size() && a.echo_fragments.size() < 4; ++i) {
      std::string s;
      for (size_t k = 0; k < 8; ++k) s += (k ? " " : "") + w[i + k];
      if (spans.count(s) && std::find(a.echo_fragments.begin(), a.echo_fragments.end(), s) == a.echo_fragments.end()) {
        a.echo_fragments.push_back(s);
        i += 7;
      }
    }
  }

  // Token cap: neutral alone, an observation only with degradation evidence.
  a.capped = in.generation_tokens && in.max_tokens > 0 && *in.generation_tokens >= in.max_tokens;
  if (a.capped) {
    if (!a.missing_sections.empty()) a.cutoff_reasons.push_back("missing_sections");
    if (a.repetitive) a.cutoff_reasons.push_back("repetitive_tail");
    if (a.thinking_incomplete) a.cutoff_reasons.push_back("incomplete_thinking_trace");
    std::string body = trim(a.analysis_text);
    std::string tail = lower_ascii(body.size() > static_cast<size_t>(q.cutoff_tail_chars)
                                       ? body.substr(body.size() - static_cast<size_t>(q.cutoff_tail_chars))
                                       : body);
    static const std::regex unfinished(R"((title|description|keywords):?\s*$)");
    if (std::regex_search(tail, unfinished)) a.cutoff_reasons.push_back("unfinished_section");
    if (!body.empty()) {
      char last = body.back();
      if (std::isalnum(static_cast<unsigned char>(last)) && std::string(".!?\"')]").find(last) == std::string::npos)
        a.cutoff_reasons.push_back("abrupt_tail");
      auto lines = split(body, '\n');
      std::string last_line = trim(lines.back());
      if (last_line == "-" || last_line == "*" || last_line == "1.") a.cutoff_reasons.push_back("dangling_markdown");
      if (last == ',' || last == ';') a.cutoff_reasons.push_back("unfinished_list");
    }
  }

  // Special-token leakage on the raw text minus declared wrappers and empty thinking wrappers.
  std::string leak_text = raw;
  for (const auto& w : removed) erase_all(leak_text, w);
  for (const auto& p : in.thinking_pairs) {
    if (p.empty_wrapper_is_leak) continue;
    std::regex empty_pair(std::regex_replace(p.start, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") + R"(\s*)" +
                          std::regex_replace(p.end, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)"));
    leak_text = std::regex_replace(leak_text, empty_pair, "");
  }
  auto add_leak = [&](const std::string& t) {
    if (std::find(a.leaked_tokens.begin(), a.leaked_tokens.end(), t) == a.leaked_tokens.end()) a.leaked_tokens.push_back(t);
  };
  for (const char* fixed : {"<end_of_turn>", "</s>", "<s>", "# INSTRUCTION", "# SOLUTION", "[INST]", "[/INST]",
                            "</think>", "[PAD]", "[CLS]", "[SEP]"})
    if (leak_text.find(fixed) != std::string::npos) add_leak(fixed);
  for (auto it = std::sregex_iterator(leak_text.begin(), leak_text.end(), control_wrapper_regex());
       it != std::sregex_iterator(); ++it)
    add_leak(it->str());
  if (leak_text.find("<|channel>thought<channel|>") != std::string::npos) add_leak("<|channel>thought<channel|>");
  if (a.thinking_present) {
    a.leaked_tokens.erase(std::remove_if(a.leaked_tokens.begin(), a.leaked_tokens.end(),
                                         [&](const std::string& t) {
                                           return std::find(a.thinking_markers.begin(), a.thinking_markers.end(), t) !=
                                                  a.thinking_markers.end();
                                         }),
                          a.leaked_tokens.end());
  }
  // Declared, non-thinking wrappers visible in the raw output; role-boundary tokens among them.
  for (const auto& w : removed) {
    a.configured_wrappers_present.push_back(w);
    std::string lw = lower_ascii(w);
    bool role = false;
    for (const char* r : {"user", "assistant", "system", "turn", "message", "utterance"})
      if (lw.find(r) != std::string::npos) role = true;
    bool leading_assistant = lw.find("assistant") != std::string::npos && starts_with(trim(raw), w);
    if (role && !leading_assistant) a.role_tokens.push_back(w);
  }

  // Minimal output.
  if (in.generation_tokens) {
    if (*in.generation_tokens == 0) {
      a.minimal_reason = "zero_tokens";
    } else if (a.word_count <= q.max_words_for_minimal_output && *in.generation_tokens < q.min_tokens_for_substantial) {
      a.minimal_reason = fmt::format("minimal_words({}w;{}tok)", a.word_count, *in.generation_tokens);
    }
  }

  // Keyword overlap and unchanged drafts, against the prompt's hint lines.
  std::optional<std::string> title_hint, desc_hint, kw_hint;
  for (const auto& line : split(in.prompt, '\n')) {
    std::string t = trim(line);
    for (auto [prefix, slot] : {std::pair{"- Title hint:", &title_hint}, {"- Description hint:", &desc_hint},
                                {"- Keyword hints:", &kw_hint}, {"Existing title:", &title_hint},
                                {"Existing description:", &desc_hint}, {"Existing keywords:", &kw_hint}})
      if (starts_with(t, prefix)) *slot = trim(t.substr(std::string_view(prefix).size()));
  }
  auto out_kw = section("keywords");
  if (kw_hint && out_kw) {
    std::vector<std::string> hints, gen;
    for (const auto& k : split_keywords(*kw_hint)) hints.push_back(normalize_term(k));
    for (const auto& k : split_keywords(*out_kw)) gen.push_back(" " + normalize_term(k) + " ");
    bool any = false;
    for (const auto& h : hints) {
      std::string variant = ends_with(h, "s") ? h.substr(0, h.size() - 1) : h + "s";
      for (const auto& g : gen)
        if (g.find(" " + h + " ") != std::string::npos || g.find(" " + variant + " ") != std::string::npos) any = true;
    }
    a.keyword_overlap = hints.empty() ? "not_assessable" : any ? "some_overlap" : "no_overlap";
  }
  if (title_hint || desc_hint || kw_hint) {
    bool all_same = true;
    std::vector<std::string> fields;
    auto same = [&](const std::optional<std::string>& hint, const char* label, const char* name) {
      if (!hint) return;
      auto o = section(label);
      bool eq = o && normalize_term(*o) == normalize_term(*hint);
      if (std::string(label) == "keywords" && o) {
        std::vector<std::string> h, g;
        for (const auto& k : split_keywords(*hint)) h.push_back(normalize_term(k));
        for (const auto& k : split_keywords(*o)) g.push_back(normalize_term(k));
        eq = h == g;
      }
      if (eq) fields.push_back(name);
      else all_same = false;
    };
    same(title_hint, "title", "title");
    same(desc_hint, "description", "description");
    same(kw_hint, "keywords", "keywords");
    if (all_same && !fields.empty()) a.unchanged_draft_fields = fields;
  }
  return a;
}

}  // namespace vlm::check
