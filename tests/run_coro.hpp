// ckpt::test::run(awaitable): runs a coroutine to completion on a private io_context and
// returns its value (exceptions propagate).
#pragma once

#include <ckpt/io.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace ckpt::test {

namespace detail {
// co_spawn would need T to be default-constructible (result<T> is not): store it instead.
template <class T>
boost::asio::awaitable<void> store(boost::asio::awaitable<T> a, std::optional<T>& out) {
  out.emplace(co_await std::move(a));
}
}  // namespace detail

template <class T>
T run(boost::asio::awaitable<T> a) {
  boost::asio::io_context ctx;
  std::exception_ptr error;
  if constexpr (std::is_void_v<T>) {
    boost::asio::co_spawn(ctx, std::move(a), [&](std::exception_ptr e) { error = e; });
    ctx.run();
    ckpt::io::wait_for_completions_posted();  // before ctx goes (see ckpt/io.hpp)
    if (error) std::rethrow_exception(error);
  } else {
    std::optional<T> out;
    boost::asio::co_spawn(ctx, detail::store(std::move(a), out),
                          [&](std::exception_ptr e) { error = e; });
    ctx.run();
    ckpt::io::wait_for_completions_posted();
    if (error) std::rethrow_exception(error);
    return std::move(*out);
  }
}

}  // namespace ckpt::test
