// ckpt/error.hpp - the one error shape every layer of ckpt uses.
//
// Expected failures (bad input, IO errors, corrupt checkpoints) travel as `ckpt::result<T>`,
// a Boost.Outcome result whose error is a `ckpt::error`: an `std::error_code` (either one of
// ckpt's own `errc` values or a system errno) plus a human message that grows context on its
// way up ("save step_10: leaf params/w: file data-00001.bin: ..."). Exceptions are reserved for
// programming errors; calling `.value()` on an errored result throws `std::system_error`
// carrying the full message.
#pragma once

#include <boost/outcome/std_result.hpp>
#include <boost/outcome/try.hpp>

#include <string>
#include <string_view>
#include <system_error>

namespace ckpt {

/// ckpt's own error conditions. System errors (ENOENT, EIO, ENOSPC, ...) keep their errno in
/// `std::system_category()` instead.
enum class errc : int {
  invalid_argument = 1,  ///< the caller passed something unusable (bad path, bad option)
  unknown_dtype,         ///< a dtype name that ckpt does not know
  shape_overflow,        ///< element count or byte size does not fit in 64 bits
  size_mismatch,         ///< byte size differs from dtype size x element count
  not_found,             ///< a checkpoint, leaf or key that does not exist
  already_exists,        ///< the target checkpoint exists and overwrite was not asked for
  template_mismatch,     ///< the restore template disagrees with the checkpoint
  corrupt,               ///< the checkpoint is damaged: checksum, truncation, malformed file
  unsupported_version,   ///< written by a newer, incompatible format version
  limit_exceeded,        ///< a hostile or absurd input exceeded a safety cap
  path_escape,           ///< a path leaves the directory it must stay in
  not_committed,         ///< a directory without a valid commit marker
  cancelled,             ///< the operation was cancelled by the caller
  io_backend,            ///< the IO engine could not be set up or was shut down
  aborted,               ///< a pipeline was aborted because another of its steps failed
  collective_failed,     ///< a coordinator's collective operation (MPI) failed
};

}  // namespace ckpt

template <>
struct std::is_error_code_enum<ckpt::errc> : std::true_type {};

namespace ckpt {

const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

/// An error code plus the human story of where it happened.
class error {
 public:
  error() = default;
  error(std::error_code code, std::string message = {})
      : code_(code), message_(std::move(message)) {}
  error(errc e, std::string message) : code_(make_error_code(e)), message_(std::move(message)) {}

  const std::error_code& code() const noexcept { return code_; }
  /// The context-carrying message, without the code's generic text.
  const std::string& message() const noexcept { return message_; }
  /// Message plus the code's text, e.g. "open index.json: No such file or directory".
  std::string what() const;

  /// Prepends "context: " to the message (outermost context first when read).
  error& add_context(std::string_view context);
  error with_context(std::string_view context) && {
    add_context(context);
    return std::move(*this);
  }

  bool operator==(errc e) const noexcept { return code_ == make_error_code(e); }
  /// Matches system errors by condition (ENOENT matches std::errc::no_such_file_or_directory).
  bool operator==(std::errc e) const noexcept { return code_ == std::make_error_condition(e); }

 private:
  std::error_code code_;
  std::string message_;
};

/// A system error from an errno value (positive), e.g. the negated `res` of an io_uring CQE.
error system_error(int errno_value, std::string message = {});

// Hooks Boost.Outcome finds by ADL.
inline std::error_code make_error_code(const error& e) noexcept {
  return e.code();
}
[[noreturn]] void outcome_throw_as_system_error_with_payload(const error& e);

template <class T>
using result = boost::outcome_v2::std_result<T, error>;

using boost::outcome_v2::success;

/// `return fail(errc::corrupt, "index.json: ...");`
inline boost::outcome_v2::failure_type<error> fail(errc e, std::string message) {
  return boost::outcome_v2::failure(error(e, std::move(message)));
}
inline boost::outcome_v2::failure_type<error> fail(error e) {
  return boost::outcome_v2::failure(std::move(e));
}

}  // namespace ckpt

/// CKPT_TRY(auto x, expr) / CKPT_TRY(expr): propagate a failed result.
#define CKPT_TRY BOOST_OUTCOME_TRY
/// The same inside a coroutine (co_return).
#define CKPT_CO_TRY BOOST_OUTCOME_CO_TRY

#define CKPT_DETAIL_CAT2(a, b) a##b
#define CKPT_DETAIL_CAT(a, b) CKPT_DETAIL_CAT2(a, b)
#define CKPT_DETAIL_TRY_CTX(ret, tmp, decl, expr, ctx)                  \
  auto&& tmp = (expr);                                                  \
  if (!tmp) ret ::ckpt::fail(std::move(tmp).error().with_context(ctx)); \
  decl = std::move(tmp).value()
#define CKPT_DETAIL_TRYV_CTX(ret, tmp, expr, ctx)                         \
  do {                                                                    \
    auto&& tmp = (expr);                                                  \
    if (!tmp) ret ::ckpt::fail(std::move(tmp).error().with_context(ctx)); \
  } while (false)

/// CKPT_TRY_CTX(auto x, expr, "context"): propagate a failed result, prepending context.
#define CKPT_TRY_CTX(decl, expr, ctx) \
  CKPT_DETAIL_TRY_CTX(return, CKPT_DETAIL_CAT(ckpt_try_, __COUNTER__), decl, expr, ctx)
/// CKPT_TRYV_CTX(expr, "context"): the same for a result whose value is not needed.
#define CKPT_TRYV_CTX(expr, ctx) \
  CKPT_DETAIL_TRYV_CTX(return, CKPT_DETAIL_CAT(ckpt_try_, __COUNTER__), expr, ctx)
/// Coroutine forms (co_return).
#define CKPT_CO_TRY_CTX(decl, expr, ctx) \
  CKPT_DETAIL_TRY_CTX(co_return, CKPT_DETAIL_CAT(ckpt_try_, __COUNTER__), decl, expr, ctx)
#define CKPT_CO_TRYV_CTX(expr, ctx) \
  CKPT_DETAIL_TRYV_CTX(co_return, CKPT_DETAIL_CAT(ckpt_try_, __COUNTER__), expr, ctx)
