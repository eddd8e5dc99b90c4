// Names of ckpt's own temporary and trash directories, and durable directory creation.
#pragma once

#include <ckpt/error.hpp>
#include <ckpt/io.hpp>

#include <boost/asio/awaitable.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace ckpt::detail {

/// ".<name>.tmp-<suffix>": where a save of <name> is written before its atomic rename.
std::string temp_name(std::string_view name, std::string_view suffix);
/// ".<name>.trash-<suffix>": where a replaced or retired checkpoint waits for deletion.
std::string trash_name(std::string_view name, std::string_view suffix);
/// True for names made by temp_name or trash_name (never a checkpoint).
bool is_temp_or_trash(std::string_view name);

/// mkdir -p through the engine; each directory created is made durable by an fsync of its
/// parent.
boost::asio::awaitable<result<void>> make_directories(io::engine& io, std::filesystem::path dir);

}  // namespace ckpt::detail
