// Durable small-file IO for the store (LATEST, DONE, retention renames), in plain POSIX calls.
//
// This is the one place the store touches the file system for writing, so that the
// reliability work can later route these operations through the io engine (and its
// fault-injecting backends) without touching store.cpp. All functions are synchronous and
// thread-safe (they keep no state).
#pragma once

#include <ckpt/error.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace ckpt::detail {

/// fsync of a directory (makes its entries' creations, renames and removals durable).
result<void> fsync_directory(const std::filesystem::path& dir);

/// Creates `dir` and its missing parents; each new directory is made durable by an fsync of
/// its parent.
result<void> create_directories_durable(const std::filesystem::path& dir);

/// Atomically replaces `dir/name` with `content`: writes `dir/<name>.tmp` (O_TRUNC), fsyncs
/// it, renames it over `dir/name`, fsyncs `dir`. A crash leaves the old or the new file.
result<void> replace_file_durable(const std::filesystem::path& dir, std::string_view name,
                                  std::string_view content);

/// Reads a whole small file (at most `max_bytes`, else errc::limit_exceeded).
result<std::string> read_small_file(const std::filesystem::path& file, std::size_t max_bytes);

/// renameat2(RENAME_NOREPLACE) of `dir/from` to `dir/to` (no fsync).
result<void> rename_noreplace(const std::filesystem::path& dir, std::string_view from,
                              std::string_view to);

/// Removes `path` recursively (no error when it is already gone).
result<void> remove_tree(const std::filesystem::path& path);

/// A short random token for trash names: "<pid>-<8 hex>".
std::string unique_suffix();

}  // namespace ckpt::detail
