// ckpt-inspect: what the subcommands share (arguments, output formatting, opening checkpoints).
#pragma once

#include "checkpoint/files.hpp"
#include "format/index.hpp"

#include <ckpt/error.hpp>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::inspect {

/// Exit codes.
inline constexpr int exit_ok = 0;
inline constexpr int exit_fail = 1;   ///< not sound / different / an error
inline constexpr int exit_usage = 2;  ///< bad command line

/// A usage error: main prints it with a hint and exits 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Any other error: main prints `ckpt-inspect: <message>` and exits with `code`.
struct tool_error : std::runtime_error {
  explicit tool_error(const std::string& m, int c = exit_fail) : std::runtime_error(m), code(c) {}
  int code;
};

/// The arguments after the subcommand: positional ones and options.
struct args {
  std::vector<std::string> positional;
  bool json = false;
  std::optional<std::string> leaf;    ///< show --leaf PATH
  std::optional<std::string> output;  ///< export -o FILE
  std::optional<std::string> to;      ///< export --to f32
};
/// Parses `argv[first..]`; `allowed` lists the options the subcommand takes ("--json", "--leaf",
/// "-o", "--to"). Throws usage_error.
args parse_args(int argc, char** argv, int first, std::vector<std::string_view> allowed);
/// Throws usage_error unless there are exactly `n` positional arguments.
void expect_positional(const args& a, std::size_t n, std::string_view usage);

/// Colour on stdout: a terminal and NO_COLOR unset.
bool colour_stdout();
/// ANSI wrappers that are no-ops without colour.
std::string green(std::string_view s);
std::string red(std::string_view s);
std::string yellow(std::string_view s);
std::string bold(std::string_view s);
std::string dim(std::string_view s);

/// "512 B", "1.5 KiB", "640.0 MiB", "1.50 GiB".
std::string human_bytes(std::uint64_t n);
/// "2026-11-28 13:00:01 UTC"
std::string human_time(std::uint64_t unix_ns);
/// "[640, 2560]"
std::string shape_string(const ckpt::shape& s);
/// "1.09" (raw / stored), "-" when nothing is stored.
std::string ratio_string(std::uint64_t logical, std::uint64_t stored);

/// A table with aligned columns; `right` columns are right-aligned. Cells may hold ANSI
/// colour (not counted in the width).
class table {
 public:
  explicit table(std::vector<std::string> header, std::vector<bool> right = {});
  /// Appends a row; returns its index for set().
  std::size_t add(std::vector<std::string> row);
  void set(std::size_t row, std::size_t column, std::string value);
  void print(std::FILE* out, std::string_view indent = "") const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

/// JSON helpers.
boost::json::array shape_json(const ckpt::shape& s);
/// Compact, one document plus '\n' on stdout.
void print_json(const boost::json::value& v);
/// Indented rendering for humans (2 spaces per level).
std::string pretty_json(const boost::json::value& v, int indent = 0);

/// A checkpoint whose small files are sound (errors otherwise, naming the first problem).
struct opened {
  std::filesystem::path path;
  format::commit_marker commit;
  format::index index;
  boost::json::object metadata;
  std::optional<boost::json::object> job;
  tree structure;  ///< format::structure(index)
};
opened open_checkpoint(const std::filesystem::path& path, int error_code = exit_fail);

/// Per leaf: stored bytes, chunks per codec and the raw bytes its fill runs cover (format 1.2).
struct leaf_stats {
  std::uint64_t stored = 0;
  std::uint64_t codec_chunks[3] = {0, 0, 0};
  std::uint64_t fill = 0;
  std::uint64_t raw = 0;
};
leaf_stats stats_of(const format::leaf_entry& le);
/// "raw", "shuffle-lz4", or "lz4:3 raw:1" for a mix, then " fill:90%" when fill runs cover
/// part of the leaf; "-" for no chunks.
std::string codec_mix(const leaf_stats& s);
boost::json::object codec_mix_json(const leaf_stats& s);

/// How a checkpoint's data files are shared (differential checkpoints, docs/FORMAT.md): the
/// files it wrote itself (empty origin) and, per origin, the base files it hard-links. `linked`
/// counts the group's files whose st_nlink is above 1 now (another directory, the origin or a
/// later checkpoint, links the same file); `missing` the files that could not be stat'ed.
struct file_group {
  std::string origin;  ///< empty: the checkpoint's own files
  std::uint64_t files = 0, bytes = 0, linked = 0, missing = 0;
};
struct sharing {
  file_group own;
  std::vector<file_group> shared;  ///< one per origin, in the order the index lists files
  /// Anything to tell: a linked file, or an own file that other checkpoints link.
  bool any() const noexcept { return !shared.empty() || own.linked > 0; }
};
/// Groups `ix.files` by origin, with each file's current link count read from `dir`.
sharing sharing_of(const std::filesystem::path& dir, const format::index& ix);
/// "4.0 MiB with A (2 data files, still shared)", "196.0 KiB itself (1 data file)".
std::string describe_group(const file_group& g);

/// The subcommands.
int list_main(const args& a);
int show_main(const args& a);
int verify_main(const args& a);
int diff_main(const args& a);
int export_main(const args& a);
int consolidate_main(const args& a);
/// show for a sharded checkpoint whose small files `cf` holds (committed).
int show_sharded(const std::filesystem::path& path, const checkpoint::checkpoint_files& cf,
                 const args& a);

}  // namespace ckpt::inspect
