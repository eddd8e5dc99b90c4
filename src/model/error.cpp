#include <ckpt/error.hpp>

#include <cstring>
#include <system_error>

namespace ckpt {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ckpt"; }
  std::string message(int v) const override {
    switch (static_cast<errc>(v)) {
      case errc::invalid_argument:
        return "invalid argument";
      case errc::unknown_dtype:
        return "unknown dtype";
      case errc::shape_overflow:
        return "shape overflows 64-bit sizes";
      case errc::size_mismatch:
        return "byte size does not match dtype and shape";
      case errc::not_found:
        return "not found";
      case errc::already_exists:
        return "already exists";
      case errc::template_mismatch:
        return "template does not match the checkpoint";
      case errc::corrupt:
        return "checkpoint is corrupt";
      case errc::unsupported_version:
        return "unsupported format version";
      case errc::limit_exceeded:
        return "safety limit exceeded";
      case errc::path_escape:
        return "path escapes its directory";
      case errc::not_committed:
        return "checkpoint is not committed";
      case errc::cancelled:
        return "cancelled";
      case errc::io_backend:
        return "IO backend unavailable";
      case errc::aborted:
        return "aborted after an earlier failure";
      case errc::collective_failed:
        return "collective operation failed";
    }
    return "unknown ckpt error " + std::to_string(v);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category c;
  return c;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

std::string error::what() const {
  std::string generic = code_.message();
  if (message_.empty()) return generic;
  if (!code_) return message_;
  return message_ + ": " + generic;
}

error& error::add_context(std::string_view context) {
  if (context.empty()) return *this;
  if (message_.empty()) {
    message_ = std::string(context);
  } else {
    std::string m;
    m.reserve(context.size() + 2 + message_.size());
    m.append(context).append(": ").append(message_);
    message_ = std::move(m);
  }
  return *this;
}

error system_error(int errno_value, std::string message) {
  return error(std::error_code(errno_value, std::system_category()), std::move(message));
}

void outcome_throw_as_system_error_with_payload(const error& e) {
  throw std::system_error(e.code(), e.message());
}

}  // namespace ckpt
