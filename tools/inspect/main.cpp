// ckpt-inspect: look inside checkpoints and job directories. One file per subcommand; this one
// dispatches, prints --help (which documents the --json schemas) and turns every error into one
// line on stderr.
#include "common.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>

namespace {

constexpr const char* help_text = R"(usage: ckpt-inspect COMMAND [ARGS] [--json]

Commands:
  list JOB_DIR              the job's checkpoints: state, LATEST, step, sizes, time; with
                            hard-linked files, the job's total on disk counting them once
  show CKPT_DIR             the tree as an outline (dtype, shape, logical and stored bytes,
                            ratio, codec mix), totals, metadata and job spec/config; with
                            linked files (differential checkpoints), the bytes it holds itself
                            and those it shares per origin, and whether still shared now
  show CKPT_DIR --leaf PATH one leaf and its chunks (file, offset, stored, raw, codec, xxh3)
                            (a sharded checkpoint: the global leaves with their sharding;
                            --leaf: its slices, the rank holding each and where)
  verify CKPT_DIR           read everything, check every checksum and the commit marker;
                            lists every bad file, leaf and chunk (a sharded checkpoint:
                            its own files and every rank's checkpoint)
  diff A B                  leaves added, removed and changed; metadata and job differences
  export CKPT_DIR LEAF -o FILE.npy [--to f32]
                            one leaf as a NumPy .npy file (v1.0). bf16 and f8 leaves are
                            written as their raw bits (<u2 / |u1) unless --to f32 converts them
  consolidate SRC DST       a self-contained copy of checkpoint SRC at DST (a new path): SRC
                            loaded whole and saved again with SRC's chunk size and no base, so
                            DST hard-links no other checkpoint's files (a differential SRC
                            shares its bases' files). Not for sharded checkpoints (never
                            differential). Holds the whole tree in memory

Options:
  --json     one JSON document on stdout (list, show, verify, diff)
  -h, --help this text

Exit status: 0 success (verify: sound; diff: same), 1 failure (verify: problems found; diff:
different; any other error), 2 usage error (verify and diff: also when a checkpoint cannot be
opened at all). Errors are one line on stderr: "ckpt-inspect: <message>".
Colour only when stdout is a terminal and NO_COLOR is not set; verify draws a progress bar on
stderr when stderr is a terminal.

JSON output (keys in this order; sizes in bytes, times in ns since the Unix epoch, UTC):
  list:   {"job_dir", "latest": name|null, "checkpoints": [{"name", "state", "latest",
           "step": int|null, "disk_bytes", "logical_bytes": int|null, "stored_bytes": int|null,
           "created_unix_ns": int|null, "ranks": int|null, "problem": string|null}],
           "disk_bytes_once"}
          disk_bytes_once: only when a file is hard-linked (differential checkpoints): the
          listing's files with each inode counted once (disk_bytes counts a linked file in
          every checkpoint that links it)
          state: "committed" | "incomplete" (no COMMIT) | "corrupt" (COMMIT present but does
          not check) | "temporary" (.NAME.tmp-*, a save in progress) | "trash" (.NAME.trash-*)
  show:   {"path", "version": [major, minor], "created_unix_ns", "logical_bytes",
           "stored_bytes", "ratio", "num_leaves", "num_chunks", "files": [{"name", "size",
           "origin"}], "own_files", "own_bytes", "own_linked_elsewhere", "shared": [{"origin",
           "files", "bytes", "linked_elsewhere", "missing"}], "tree": NODE, "leaves": [LEAF],
           "metadata": {...}, "job": {...}|null}
          "origin": only on a file hard-linked from the checkpoint that wrote it (differential
           checkpoints). "own_*" and "shared": only when some data file is linked (an origin,
           or an own file that other checkpoints link): own_* the files this checkpoint
           wrote, "shared" the linked ones by origin; *linked_elsewhere counts the files whose
           link count is above 1 now (another checkpoint still links them), "missing" the
           files not found
          NODE: {"kind": "dict", "items": [["key", NODE]]} | {"kind": "list", "elements":
           [NODE]} | {"kind": "none"} | {"kind": "leaf", "leaf": index into "leaves"}
          LEAF: {"path", "dtype", "shape": [..], "logical_bytes", "stored_bytes", "ratio",
           "num_chunks", "codecs": {"raw": n, "lz4": n, "shuffle-lz4": n}}
  show --leaf: {"path", "leaf": LEAF plus "chunks": [{"index", "file", "offset", "stored",
           "raw", "codec", "xxh3"}]}
  show (sharded): {"path", "sharded": true, "version", "created_unix_ns", "logical_bytes",
           "stored_bytes", "ratio", "ranks": [{"dir", "commit_bytes"}], "num_leaves",
           "num_slices", "tree": NODE (dicts and leaves), "leaves": [SLEAF], "metadata", "job"}
          SLEAF: {"path", "dtype", "shape", "logical_bytes", "stored_bytes": int|null,
           "replicated", "split_dims": [dim], "num_slices", "sharding" (as shown),
           "slices": [{"rank", "offset", "extent", "leaf", "stored_bytes": int|null}]}
          (--leaf: {"path", "leaf": SLEAF})
  verify: {"path", "ok", "committed", "files", "leaves", "chunks", "chunks_checked",
           "logical_bytes", "stored_bytes", "bytes_read", "seconds", "problems": [{"file",
           "leaf": string|null, "chunk": int|null, "offset": int|null, "message"}]}
  diff:   {"a", "b", "same", "added": [{"path", "dtype", "shape"}], "removed": [same],
           "changed": [{"path", "dtype": [a, b]|null, "shape": [a, b]|null, "data": bool,
           "chunks_differing": int|null}], "unchanged": n, "tree_same": bool,
           "metadata": [{"key", "a": value|null, "b": value|null}], "job": [same]}
          show's "ratio" is logical bytes / chunk bytes stored (compression); "stored_bytes"
          is the data files' size (with alignment padding).
          metadata/job keys are dotted paths into the objects ("config.lr"); a missing side
          is null.
)";

int usage(const char* msg) {
  if (msg) std::fprintf(stderr, "ckpt-inspect: %s (see ckpt-inspect --help)\n", msg);
  return ckpt::inspect::exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ckpt::inspect;
  if (argc < 2) return usage("no command given");
  std::string_view cmd = argv[1];
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::fputs(help_text, stdout);
      return exit_ok;
    }
  }
  try {
    if (cmd == "list") return list_main(parse_args(argc, argv, 2, {"--json"}));
    if (cmd == "show") return show_main(parse_args(argc, argv, 2, {"--json", "--leaf"}));
    if (cmd == "verify") return verify_main(parse_args(argc, argv, 2, {"--json"}));
    if (cmd == "diff") return diff_main(parse_args(argc, argv, 2, {"--json"}));
    if (cmd == "export") return export_main(parse_args(argc, argv, 2, {"-o", "--to"}));
    if (cmd == "consolidate") return consolidate_main(parse_args(argc, argv, 2, {}));
    return usage(("unknown command \"" + std::string(cmd) + "\"").c_str());
  } catch (const usage_error& e) {
    return usage(e.what());
  } catch (const tool_error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "ckpt-inspect: %s\n", e.what());
    return e.code;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "ckpt-inspect: %s\n", e.what());
    return exit_fail;
  }
}
