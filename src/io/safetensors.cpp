// safetensors reader: header parsing with simdjson, strict validation of every field against the
// file it came from, borrowed tensor views over the mapping (lazy) or the owned buffer (eager), and
// Checkpoint, which joins the shards of one model folder into one name -> tensor index.
//
// Validation order follows the file: length prefix, header bytes, JSON shape, then each tensor's
// dtype, shape and offsets, then overlaps across tensors. The data region is never read here (lazy
// mode must stay lazy); only the header pages are touched.
#include "io/safetensors.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_map>

#include <simdjson.h>

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"

namespace vlm {

namespace {

constexpr size_t kMaxHeaderBytes = size_t{100} * 1000 * 1000;  // 100 MB, as the safetensors spec
constexpr size_t kMaxIndexBytes = size_t{64} << 20;

const char* element_type_name(simdjson::dom::element_type t) {
  using T = simdjson::dom::element_type;
  switch (t) {
    case T::ARRAY: return "an array";
    case T::OBJECT: return "an object";
    case T::INT64:
    case T::UINT64:
    case T::DOUBLE: return "a number";
    case T::STRING: return "a string";
    case T::BOOL: return "a boolean";
    case T::NULL_VALUE: return "null";
  }
  return "something else";
}

// A JSON integer that must be >= 0; `field` names it in errors.
uint64_t non_negative_int(simdjson::dom::element e, const std::string& path, const std::string& name,
                          const char* field) {
  uint64_t u = 0;
  if (e.is_uint64() && e.get_uint64().get(u) == simdjson::SUCCESS) return u;
  if (e.is_int64())
    throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": {} holds a negative value {}", path, name, field,
                int64_t(e.get_int64()));
  throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": {} must hold non-negative integers, found {}", path, name,
              field, element_type_name(e.type()));
}

}  // namespace

struct SafetensorsFile::Impl {
  std::string path;
  std::shared_ptr<MappedFile> file;
  std::vector<TensorInfo> tensors;
  std::unordered_map<std::string, size_t> by_name;
  std::map<std::string, std::string> metadata;
};

namespace {
// 8 + header length, read from the file's first 8 bytes (0 when unreadable: open() then reports why).
size_t data_region_offset(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return 0;
  uint64_t n = 0;
  size_t got = std::fread(&n, 1, 8, f);
  std::fclose(f);
  return got == 8 && n < (uint64_t{1} << 40) ? static_cast<size_t>(8 + n) : 0;
}
}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path, LoadMode mode) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->file = MappedFile::open(path, mode, MemCategory::kWeights, data_region_offset(path));
  const uint8_t* bytes = impl->file->data();
  const size_t size = impl->file->size();

  // ---- length prefix and header bounds ----
  if (size < 8)
    throw_error(ErrorKind::kFormat, "{}: file is {} bytes, too short for the 8-byte safetensors header length",
                path, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian on every host we build for
  if (header_len > size - 8)
    throw_error(ErrorKind::kFormat, "{}: header length {} exceeds the {} bytes that follow it (file is {} bytes)",
                path, header_len, size - 8, size);
  if (header_len > kMaxHeaderBytes)
    throw_error(ErrorKind::kFormat, "{}: header length {} exceeds the {}-byte limit", path, header_len,
                kMaxHeaderBytes);
  const size_t data_start = 8 + static_cast<size_t>(header_len);
  const size_t data_size = size - data_start;

  // ---- JSON ----
  simdjson::dom::parser parser;
  simdjson::padded_string header(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(header_len));
  simdjson::dom::element doc;
  if (auto err = parser.parse(header).get(doc))
    throw_error(ErrorKind::kFormat, "{}: header is not valid JSON: {}", path, simdjson::error_message(err));
  simdjson::dom::object root;
  if (doc.get_object().get(root))
    throw_error(ErrorKind::kFormat, "{}: header must be a JSON object, found {}", path,
                element_type_name(doc.type()));

  for (auto field : root) {
    std::string name(field.key);
    if (name == "__metadata__") {
      simdjson::dom::object meta;
      if (field.value.get_object().get(meta))
        throw_error(ErrorKind::kFormat, "{}: __metadata__ must be an object of strings, found {}", path,
                    element_type_name(field.value.type()));
      for (auto m : meta) {
        std::string_view v;
        if (m.value.get_string().get(v))
          throw_error(ErrorKind::kFormat, "{}: __metadata__ \"{}\" must be a string, found {}", path, m.key,
                      element_type_name(m.value.type()));
        impl->metadata[std::string(m.key)] = std::string(v);
      }
      continue;
    }
    simdjson::dom::object entry;
    if (field.value.get_object().get(entry))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": entry must be an object, found {}", path, name,
                  element_type_name(field.value.type()));
    if (impl->by_name.count(name))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\" appears twice in the header", path, name);

    TensorInfo info;
    info.name = name;
    info.file = path;

    // dtype
    simdjson::dom::element e;
    std::string_view dtype_str;
    if (entry["dtype"].get(e)) throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": no \"dtype\"", path, name);
    if (e.get_string().get(dtype_str))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": dtype must be a string, found {}", path, name,
                  element_type_name(e.type()));
    auto dt = dtype_from_safetensors(dtype_str);
    if (!dt) throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": unknown dtype \"{}\"", path, name, dtype_str);
    info.dtype = *dt;

    // shape: a list of non-negative ints; numel * dtype size must not overflow
    simdjson::dom::array shape;
    if (entry["shape"].get(e)) throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": no \"shape\"", path, name);
    if (e.get_array().get(shape))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": shape must be a list of non-negative integers, found {}",
                  path, name, element_type_name(e.type()));
    uint64_t numel = 1;
    for (auto d : shape) {
      uint64_t v = non_negative_int(d, path, name, "shape");
      if (v > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel))
        throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": shape is too large", path, name);
      info.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t expect_bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &expect_bytes))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": shape is too large", path, name);

    // data_offsets: [begin, end) relative to the data region
    simdjson::dom::array offs;
    if (entry["data_offsets"].get(e))
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": no \"data_offsets\"", path, name);
    if (e.get_array().get(offs) || offs.size() != 2)
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": data_offsets must be [begin, end], found {}", path, name,
                  simdjson::to_string(e));
    uint64_t begin = non_negative_int(offs.at(0).value_unsafe(), path, name, "data_offsets");
    uint64_t end = non_negative_int(offs.at(1).value_unsafe(), path, name, "data_offsets");
    if (end < begin)
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\": data_offsets [{}, {}] end before begin", path, name, begin,
                  end);
    if (end > data_size)
      throw_error(ErrorKind::kFormat,
                  "{}: tensor \"{}\": data_offsets [{}, {}] run past the data region of {} bytes", path, name, begin,
                  end, data_size);
    if (end - begin != expect_bytes)
      throw_error(ErrorKind::kFormat,
                  "{}: tensor \"{}\": data_offsets [{}, {}] span {} bytes, but {}{} needs {} bytes", path, name,
                  begin, end, end - begin, dtype_name(info.dtype), shape_str(info.shape), expect_bytes);
    info.data_begin = data_start + static_cast<size_t>(begin);
    info.nbytes = static_cast<size_t>(expect_bytes);
    impl->by_name.emplace(name, impl->tensors.size());
    impl->tensors.push_back(std::move(info));
  }

  // ---- overlaps: MLX writes tensors in hash order, so sort by offset first ----
  std::vector<const TensorInfo*> order;
  order.reserve(impl->tensors.size());
  for (const auto& t : impl->tensors)
    if (t.nbytes > 0) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data_begin < b->data_begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorInfo* prev = order[i - 1];
    const TensorInfo* cur = order[i];
    if (cur->data_begin < prev->data_begin + prev->nbytes)
      throw_error(ErrorKind::kFormat, "{}: tensor \"{}\" (data_offsets [{}, {}]) overlaps tensor \"{}\" ([{}, {}])",
                  path, cur->name, cur->data_begin - data_start, cur->data_begin - data_start + cur->nbytes,
                  prev->name, prev->data_begin - data_start, prev->data_begin - data_start + prev->nbytes);
  }

  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->impl_ = std::move(impl);
  return f;
}

const std::string& SafetensorsFile::path() const { return impl_->path; }
const std::vector<TensorInfo>& SafetensorsFile::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }
size_t SafetensorsFile::file_size() const { return impl_->file->size(); }
const MappedFile& SafetensorsFile::file() const { return *impl_->file; }

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->tensors[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) throw_error(ErrorKind::kNotFound, "{}: no tensor \"{}\"", impl_->path, name);
  // The view keeps the mapping (or eager buffer) alive. Kernels rely on natural alignment: eager buffers
  // put the data region on a 64-byte boundary, but a mapping keeps the file's layout, and MLX writes the
  // header unpadded — such a tensor is copied into aligned memory instead (counted as weights).
  const uint8_t* p = impl_->file->data() + info->data_begin;
  Tensor view = Tensor::borrow(p, info->shape, info->dtype, impl_->file);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(info->dtype) == 0) return view;
  return view.clone(MemCategory::kWeights);
}

// ---- Checkpoint ------------------------------------------------------------------------------------

namespace {

bool is_regular_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> list_safetensors(const std::string& folder) {
  DIR* d = ::opendir(folder.c_str());
  if (!d) {
    ErrorKind kind = (errno == ENOENT || errno == ENOTDIR) ? ErrorKind::kNotFound : ErrorKind::kIo;
    throw_error(kind, "{}: cannot open model folder: {}", folder, std::strerror(errno));
  }
  std::vector<std::string> out;
  while (dirent* ent = ::readdir(d)) {
    std::string n = ent->d_name;
    if (n.size() > 12 && n.ends_with(".safetensors") && n[0] != '.' && is_regular_file(folder + "/" + n))
      out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// A shard name from the index must stay inside the folder: no absolute paths, no "..".
void check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  bool bad = shard.empty() || shard[0] == '/' || shard == ".." || shard.starts_with("../") ||
             shard.find("/../") != std::string::npos || shard.ends_with("/..");
  if (bad)
    throw_error(ErrorKind::kFormat, "{}: weight_map[\"{}\"] = \"{}\" is not a file name inside the model folder",
                index_path, tensor, shard);
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& folder_in, LoadMode mode) {
  Checkpoint c;
  c.folder_ = folder_in;
  while (c.folder_.size() > 1 && c.folder_.back() == '/') c.folder_.pop_back();
  c.mode_ = mode;
  const std::string& folder = c.folder_;
  const std::string index_path = folder + "/model.safetensors.index.json";

  if (is_regular_file(index_path)) {
    Json index = read_json_file(index_path, kMaxIndexBytes);
    const Json* wm = json_find(index, "weight_map");
    if (!wm || !wm->is_object())
      throw_error(ErrorKind::kFormat, "{}: no \"weight_map\" object", index_path);
    // Open each shard once, in the order the map first names it.
    std::map<std::string, size_t> shard_index;
    for (const auto& [tensor, shard_v] : wm->items()) {
      if (!shard_v.is_string())
        throw_error(ErrorKind::kFormat, "{}: weight_map[\"{}\"] must be a file name, found {}", index_path, tensor,
                    shard_v.dump());
      std::string shard = shard_v.get<std::string>();
      check_shard_name(index_path, tensor, shard);
      if (!shard_index.count(shard)) {
        std::string shard_path = folder + "/" + shard;
        if (!is_regular_file(shard_path))
          throw_error(ErrorKind::kNotFound, "{}: shard \"{}\" (holding tensor \"{}\") is missing: {} does not exist",
                      index_path, shard, tensor, shard_path);
        shard_index[shard] = c.files_.size();
        c.files_.push_back(SafetensorsFile::open(shard_path, mode));
      }
      size_t fi = shard_index[shard];
      const TensorInfo* info = c.files_[fi]->find(tensor);
      if (!info)
        throw_error(ErrorKind::kFormat, "{}: weight_map says tensor \"{}\" is in \"{}\", but {} has no such tensor",
                    index_path, tensor, shard, c.files_[fi]->path());
      c.index_[tensor] = {fi, info};
    }
    // Tensors a shard holds that the map forgets still load (mlx-vlm globs the shards), unless the
    // map places that name elsewhere.
    for (size_t fi = 0; fi < c.files_.size(); ++fi)
      for (const auto& t : c.files_[fi]->tensors())
        if (!c.index_.count(t.name)) {
          VLM_LOG_DEBUG("{}: tensor \"{}\" is in {} but not in the weight_map; loading it anyway", index_path, t.name,
                    c.files_[fi]->path());
          c.index_[t.name] = {fi, &t};
        }
    return c;
  }

  std::vector<std::string> names = list_safetensors(folder);
  if (names.size() > 1) std::erase(names, std::string("consolidated.safetensors"));  // Mistral's duplicate
  if (names.empty())
    throw_error(ErrorKind::kNotFound, "{}: no model.safetensors.index.json and no *.safetensors files", folder);
  for (const auto& n : names) {
    size_t fi = c.files_.size();
    c.files_.push_back(SafetensorsFile::open(folder + "/" + n, mode));
    for (const auto& t : c.files_[fi]->tensors()) {
      auto [it, inserted] = c.index_.emplace(t.name, std::make_pair(fi, &t));
      if (!inserted)
        throw_error(ErrorKind::kFormat, "{}: tensor \"{}\" is in both {} and {}", folder, t.name,
                    c.files_[it->second.first]->path(), c.files_[fi]->path());
    }
  }
  return c;
}

bool Checkpoint::has(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw_error(ErrorKind::kNotFound, "{}: checkpoint has no tensor \"{}\"", folder_, name);
  return *it->second.second;
}

Tensor Checkpoint::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw_error(ErrorKind::kNotFound, "{}: checkpoint has no tensor \"{}\"", folder_, name);
  return files_[it->second.first]->tensor(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);  // std::map: already sorted
  return out;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& kv : index_) total += kv.second.second->nbytes;
  return total;
}

bool Checkpoint::lock_in_memory(std::string* why) {
  for (auto& f : files_) {
    // MappedFile::lock is non-const; the files are shared but only this checkpoint locks them.
    auto& mf = const_cast<MappedFile&>(f->file());
    std::string reason;
    if (!mf.lock(&reason)) {
      if (why) *why = fmt::format("{}: mlock refused: {}", f->path(), reason);
      return false;
    }
  }
  return true;
}

}  // namespace vlm
