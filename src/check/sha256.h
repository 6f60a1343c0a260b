// SHA-256 (FIPS 180-4) for image digests, prompt hashes and failure signatures. Our own small
// implementation, checked against the FIPS test vectors and coreutils' sha256sum.
#pragma once

#include <string>
#include <string_view>

namespace vlm::check {

std::string sha256_hex(std::string_view data);
// Streams a file; throws Error(kNotFound/kIo) naming it.
std::string sha256_file_hex(const std::string& path);

}  // namespace vlm::check
