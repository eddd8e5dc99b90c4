// perf/perf.hpp - the ckpt-perf subcommand registry and small shared helpers.
//
// A subcommand registers itself from its own file, so adding one never touches main.cpp:
//
//   static ckpt::perf::register_command reg("save", "save a synthetic tree", save_main);
//
// The function receives the arguments after the subcommand name (argv[0] is the name).
#pragma once

#include <ckpt/io.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ckpt::perf {

using command_fn = int (*)(int argc, char** argv);

struct command {
  std::string help;
  command_fn fn = nullptr;
};

/// Every registered subcommand by name (sorted, for the usage text).
std::map<std::string, command, std::less<>>& registry();

/// Registers a subcommand at static-initialisation time.
struct register_command {
  register_command(std::string name, std::string help, command_fn fn) {
    registry()[std::move(name)] = command{std::move(help), fn};
  }
};

/// Parses a byte count with an optional suffix: 4096, 4K, 4KiB, 64M, 4G, 4GiB (powers of 1024).
std::optional<std::uint64_t> parse_bytes(std::string_view s);

/// Runs a coroutine to completion on a private io_context (the caller's thread) and returns
/// its value.
template <class T>
T run(boost::asio::awaitable<T> a) {
  boost::asio::io_context ctx;
  std::optional<T> out;
  std::exception_ptr error;
  auto store = [](boost::asio::awaitable<T> a,
                  std::optional<T>& out) -> boost::asio::awaitable<void> {
    out.emplace(co_await std::move(a));
  };
  boost::asio::co_spawn(ctx, store(std::move(a), out), [&](std::exception_ptr e) { error = e; });
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

}  // namespace ckpt::perf
