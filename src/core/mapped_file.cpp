// MappedFile via mmap(2) / read(2).
#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace vlm {

namespace {
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void throw_open_error(const std::string& path, int err) {
  ErrorKind kind = (err == ENOENT || err == ENOTDIR) ? ErrorKind::kNotFound : ErrorKind::kIo;
  throw_error(kind, "{}: cannot open: {}", path, std::strerror(err));
}
}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, LoadMode mode, MemCategory category,
                                             size_t align_at) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw_open_error(path, errno);
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw_error(ErrorKind::kIo, "{}: cannot stat: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw_error(ErrorKind::kIo, "{}: not a regular file", path);

  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<size_t>(st.st_size);
  m->mode_ = mode;
  m->category_ = category;
  if (m->size_ == 0) return m;

  if (mode == LoadMode::kLazy) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
    if (p == MAP_FAILED) throw_error(ErrorKind::kIo, "{}: mmap failed: {}", path, std::strerror(errno));
    m->data_ = static_cast<const uint8_t*>(p);
    MemoryTracker::instance().on_map(static_cast<int64_t>(m->size_));
  } else {
    // The buffer is 64-byte aligned; shifting the file by `shift` bytes puts offset align_at on a boundary.
    const size_t shift = (64 - align_at % 64) % 64;
    m->owned_ = make_host_buffer(m->size_ + shift, category);
    auto* dst = static_cast<uint8_t*>(m->owned_.get()) + shift;
    size_t done = 0;
    while (done < m->size_) {
      ssize_t r = ::pread(f.fd, dst + done, m->size_ - done, static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw_error(ErrorKind::kIo, "{}: read failed at byte {} of {}: {}", path, done, m->size_,
                    r == 0 ? "unexpected end of file" : std::strerror(errno));
      done += static_cast<size_t>(r);
    }
    m->data_ = dst;
  }
  return m;
}

MappedFile::~MappedFile() {
  if (mode_ == LoadMode::kLazy && data_) {
    if (locked_) ::munlock(data_, size_);
    ::munmap(const_cast<uint8_t*>(data_), size_);
    MemoryTracker::instance().on_unmap(static_cast<int64_t>(size_));
  }
}

void MappedFile::prefetch(size_t offset, size_t len) const {
  if (mode_ != LoadMode::kLazy || !data_ || offset >= size_) return;
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t start = offset & ~(page - 1);
  size_t end = std::min(size_, offset + len);
  ::madvise(const_cast<uint8_t*>(data_) + start, end - start, MADV_WILLNEED);
}

bool MappedFile::lock(std::string* why) {
  if (!data_ || locked_) return true;
  if (::mlock(data_, size_) != 0) {
    if (why) *why = std::strerror(errno);
    return false;
  }
  locked_ = true;
  return true;
}

std::string read_file_to_string(const std::string& path, size_t max_bytes) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw_open_error(path, errno);
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw_error(ErrorKind::kIo, "{}: cannot stat: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw_error(ErrorKind::kIo, "{}: not a regular file", path);
  if (static_cast<size_t>(st.st_size) > max_bytes)
    throw_error(ErrorKind::kResource, "{}: file is {} bytes, more than the {} allowed", path, st.st_size, max_bytes);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t r = ::read(f.fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_error(ErrorKind::kIo, "{}: read failed: {}", path, std::strerror(errno));
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  out.resize(done);
  return out;
}

}  // namespace vlm
