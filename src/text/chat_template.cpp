// Chat-template discovery and rendering as transformers does it. Discovery order: chat_template.jinja, then
// chat_template.json ({"chat_template": ...}), then tokenizer_config.json's "chat_template" (a string, or a list
// of {"name", "template"} entries picked by name). Rendering passes the variables transformers' render_jinja_template
// passes: messages, tools, documents, add_generation_prompt, then the special-token strings, then extra kwargs
// (later ones win, as in `{**special_tokens_map, **kwargs}`).
#include "text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "text/jinja/jinja.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  VLM_CHECK(f.good(), ErrorKind::kIo, "{}: cannot open for reading", p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A chat_template field: a string, or a list of {"name", "template"}.
std::optional<ChatTemplate> pick(const Json& field, const std::string& name, const std::string& origin) {
  if (field.is_null()) return std::nullopt;
  if (field.is_string()) {
    if (name != "default")
      throw_error(ErrorKind::kNotFound, "{}: has a single chat template, not one named '{}'", origin, name);
    return ChatTemplate{field.get<std::string>(), origin};
  }
  VLM_CHECK(field.is_array(), ErrorKind::kFormat,
            "{}: chat_template must be a string or a list of {{name, template}}, got {}", origin, field.type_name());
  std::vector<std::string> names;
  for (const auto& e : field) {
    VLM_CHECK(e.is_object() && e.contains("name") && e["name"].is_string() && e.contains("template") &&
                  e["template"].is_string(),
              ErrorKind::kFormat, "{}: chat_template list entries must be {{\"name\": str, \"template\": str}}", origin);
    names.push_back(e["name"].get<std::string>());
    if (names.back() == name) return ChatTemplate{e["template"].get<std::string>(), origin + " [" + name + "]"};
  }
  std::string all;
  for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
  throw_error(ErrorKind::kNotFound, "{}: no chat template named '{}' (it has: {})", origin, name, all);
}

}  // namespace

std::optional<ChatTemplate> ChatTemplate::from_folder(const std::string& folder, const std::string& name) {
  fs::path dir(folder);
  VLM_CHECK(fs::is_directory(dir), ErrorKind::kNotFound, "{}: not a directory", folder);
  if (name == "default") {
    fs::path jinja = dir / "chat_template.jinja";
    if (fs::exists(jinja)) return ChatTemplate{read_text(jinja), jinja.string()};
  } else {
    fs::path extra = dir / "additional_chat_templates" / (name + ".jinja");
    if (fs::exists(extra)) return ChatTemplate{read_text(extra), extra.string()};
  }
  fs::path json = dir / "chat_template.json";
  if (fs::exists(json)) {
    Json j = read_json_file(json.string());
    VLM_CHECK(j.is_object(), ErrorKind::kFormat, "{}: expected a JSON object", json.string());
    const Json* field = json_find(j, "chat_template");
    VLM_CHECK(field, ErrorKind::kFormat, "{}: missing field \"chat_template\"", json.string());
    if (auto t = pick(*field, name, json.string())) return t;
  }
  fs::path cfg = dir / "tokenizer_config.json";
  if (fs::exists(cfg)) {
    Json j = read_json_file(cfg.string());
    if (const Json* field = json_find(j, "chat_template")) return pick(*field, name, cfg.string());
  }
  if (name != "default") throw_error(ErrorKind::kNotFound, "{}: no chat template named '{}'", folder, name);
  return std::nullopt;
}

Json special_tokens_from_config(const Json& cfg) {
  Json out = Json::object();
  if (!cfg.is_object()) return out;
  auto token_text = [](const Json& v) -> std::optional<std::string> {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return std::nullopt;
  };
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (const Json* v = json_find(cfg, key))
      if (auto s = token_text(*v)) out[key] = *s;
  }
  if (const Json* v = json_find(cfg, "additional_special_tokens"); v && v->is_array() && !v->empty()) {
    Json list = Json::array();
    for (const auto& t : *v)
      if (auto s = token_text(t)) list.push_back(*s);
    out["additional_special_tokens"] = list;
  }
  return out;
}

std::string render_chat_template(const ChatTemplate& tmpl, const Json& messages, const ChatRenderOptions& opts) {
  VLM_CHECK(messages.is_array(), ErrorKind::kInvalidArgument, "chat messages must be a JSON list, got {}",
            messages.type_name());
  Json vars = Json::object();
  vars["messages"] = messages;
  vars["tools"] = opts.tools;
  vars["documents"] = opts.documents;
  vars["add_generation_prompt"] = opts.add_generation_prompt;
  if (opts.special_tokens.is_object())
    for (auto it = opts.special_tokens.begin(); it != opts.special_tokens.end(); ++it) vars[it.key()] = it.value();
  if (!opts.extra.is_null()) {
    VLM_CHECK(opts.extra.is_object(), ErrorKind::kInvalidArgument, "chat template kwargs must be a JSON object, got {}",
              opts.extra.type_name());
    for (auto it = opts.extra.begin(); it != opts.extra.end(); ++it) vars[it.key()] = it.value();
  }
  jinja::Template t(tmpl.source, tmpl.origin.empty() ? "chat template" : tmpl.origin);
  jinja::RenderOptions ro;
  ro.now_unix = opts.now_unix;
  return t.render(vars, ro);
}

}  // namespace vlm
