// Hostile checkpoint directories at the loader level (the parser-level cases are in
// test_format.cpp): an index naming files outside the directory, symlinked files, claimed sizes
// of 1 TiB, 10^7 entries. Each must be refused with a clear error, quickly, with bounded memory,
// and without opening anything outside the checkpoint (watched with inotify).
// Two loader fixes came from these cases (src/load.cpp): data-file sizes are checked before any
// destination memory is allocated, and a failed allocation is an error, not std::bad_alloc.
#include "format/index.hpp"
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>

namespace fs = std::filesystem;
namespace fmt = ckpt::format;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

#if defined(__SANITIZE_ADDRESS__)
// Under ASan a 1 TiB allocation aborts the process by default; the loader's contract is that a
// failed allocation is an error, which needs malloc to fail the normal way (ASAN_OPTIONS from
// the environment still override this default).
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1";
}
#endif

namespace {

// Sanitizers slow loads down and add shadow memory: the limits below scale with them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr double sanitizer_factor = 4;
#else
constexpr double sanitizer_factor = 1;
#endif

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const fs::path& p, std::string_view content) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

fmt::commit_marker read_commit(const fs::path& dir) {
  std::string text = read_all(dir / std::string(fmt::commit_file));
  const std::size_t n = text.size();
  text.append(fmt::parse_padding, ' ');
  return fmt::parse_commit(std::string_view(text.data(), n)).value();
}

// Replaces the checkpoint's index with `index_json` and rewrites COMMIT to match it, so that
// only the index's content is hostile (its checksum is right).
void install_index(const fs::path& dir, std::string_view index_json) {
  auto cm = read_commit(dir);
  cm.index_bytes = index_json.size();
  cm.index_xxh3 = fmt::checksum(std::as_bytes(std::span(index_json)));
  write_all(dir / std::string(fmt::index_file), index_json);
  write_all(dir / std::string(fmt::commit_file), fmt::encode_commit(cm));
}

// A fresh valid checkpoint: one leaf of 64 KiB in one data file.
tree small_tree() {
  auto w = array::zeros(dtype::f32, {16384}).value();
  auto rb = ckpt::test::random_bytes(w.num_bytes(), 3);
  std::memcpy(w.as_mutable<float>().data(), rb.data(), rb.size());
  return tree::dict({{"w", w}});
}

void make_checkpoint(const fs::path& dir) {
  ckpt::save_options so;
  so.data_files = 1;
  so.compress = false;
  REQUIRE(ckpt::save_blocking(dir, small_tree(), {{"step", 1}}, so));
}

// Counts IN_OPEN events on `watched` (a directory) while `fn` runs.
template <class F>
int opens_in(const fs::path& watched, F&& fn) {
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  REQUIRE(in >= 0);
  REQUIRE(::inotify_add_watch(in, watched.c_str(), IN_OPEN) >= 0);
  fn();
  int opens = 0;
  alignas(inotify_event) char buf[8192];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      if (e->len > 0 && std::string(e->name) == "x") ++opens;
      p += sizeof(inotify_event) + e->len;
    }
  }
  ::close(in);
  return opens;
}

// The parent's runtime threads do not exist in a forked child: it loads on a runtime of its own.
ckpt::result<ckpt::loaded_checkpoint> load_in_child(const fs::path& dir) {
  ckpt::load_options lo;
  lo.runtime = ckpt::runtime::create().value();
  return ckpt::load_blocking(dir, nullptr, lo);
}

// Runs `fn` in a child process with a time limit; returns {exit code (or -signal), seconds,
// max RSS in MiB}.
struct child_result {
  int code = 0;
  double seconds = 0;
  double max_rss_mib = 0;
};
template <class F>
child_result in_child(F&& fn, int limit_s) {
  const auto t0 = std::chrono::steady_clock::now();
#if defined(__SANITIZE_THREAD__)
  const bool inline_run = true;  // TSan kills children of a multi-threaded fork
#else
  const bool inline_run = std::getenv("CKPT_HOSTILE_NOFORK") != nullptr;  // (debugging)
#endif
  if (inline_run) {  // no time limit, no RSS figure
    child_result r;
    r.code = fn();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  std::fflush(stdout);  // (else the child prints the parent's buffered lines again)
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(static_cast<unsigned>(limit_s));
    const int code = fn();
    std::fflush(stdout);
    std::_Exit(code);
  }
  int st = 0;
  struct rusage ru {};
  REQUIRE(::wait4(pid, &st, 0, &ru) == pid);
  child_result r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
  r.max_rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;
  return r;
}

// The index of one f32 leaf "w" of `elements` elements in one raw chunk of data-00000.bin,
// claiming the file holds `file_size` bytes.
std::string claimed_index(std::uint64_t elements, std::uint64_t file_size) {
  fmt::index ix;
  ix.files.push_back({"data-00000.bin", file_size, {}});
  fmt::leaf_entry le;
  le.path = "w";
  le.dtype = dtype::f32;
  le.shape = {static_cast<std::int64_t>(elements)};
  le.num_bytes = elements * 4;
  fmt::chunk_entry c;
  c.file = 0;
  c.offset = 0;
  c.stored_size = le.num_bytes;
  c.raw_size = le.num_bytes;
  c.codec = fmt::codec::raw;
  c.xxh3 = 0;
  le.chunks.push_back(c);
  ix.leaves.push_back(le);
  fmt::set_structure(ix, tree::dict({{"w", array::spec(dtype::f32, le.shape).value()}}));
  return fmt::encode_index(ix);
}

}  // namespace

TEST_CASE("an index naming files outside the checkpoint is refused without opening them",
          "[hostile]") {
  ckpt::test::temp_dir root;
  const fs::path dir = root / "ckpt";
  make_checkpoint(dir);
  const std::string good = read_all(dir / std::string(fmt::index_file));
  const std::string data = read_all(dir / "data-00000.bin");
  // A perfect copy of the data outside: following the name would load "correct" data.
  write_all(root / "x", data);
  int cases = 0;
  for (std::string name :
       std::vector<std::string>{"../x", root.path().string() + "/x", "./../x", "sub/../../x", "..",
                                ".", "", "data-00000.bin/", "x\\u0000"}) {
    std::string bad = good;
    const std::string from = "\"name\":\"data-00000.bin\"";
    const auto at = bad.find(from);
    REQUIRE(at != std::string::npos);
    bad.replace(at, from.size(), "\"name\":\"" + name + "\"");
    install_index(dir, bad);
    ckpt::result<ckpt::loaded_checkpoint> r = ckpt::fail(ckpt::errc::corrupt, "not run");
    const int opens = opens_in(root.path(), [&] { r = ckpt::load_blocking(dir); });
    INFO("file name \"" << name << "\"");
    CHECK_FALSE(r);
    if (!r) CHECK(r.error().message().find(dir.string()) != std::string::npos);
    CHECK(opens == 0);
    ++cases;
  }
  install_index(dir, good);
  REQUIRE(ckpt::load_blocking(dir));
  std::printf("hostile (loader): traversal names %d, files opened outside the checkpoint 0\n",
              cases);
}

TEST_CASE("symlinked checkpoint files are refused (O_NOFOLLOW)", "[hostile]") {
  ckpt::test::temp_dir root;
  const fs::path dir = root / "ckpt";
  make_checkpoint(dir);
  int cases = 0;
  for (std::string file :
       std::vector<std::string>{"data-00000.bin", std::string(fmt::index_file),
                                std::string(fmt::commit_file), std::string(fmt::metadata_file)}) {
    // The link points at an identical copy: only refusing links makes the load fail.
    fs::rename(dir / file, root / "x");
    fs::create_symlink(root / "x", dir / file);
    auto r = ckpt::load_blocking(dir);
    INFO(file << " as a symlink");
    CHECK_FALSE(r);
    fs::remove(dir / file);
    fs::rename(root / "x", dir / file);
    ++cases;
  }
  REQUIRE(ckpt::load_blocking(dir));
  std::printf("hostile (loader): symlinked files %d refused\n", cases);
}

TEST_CASE("claimed sizes of 1 TiB fail fast with bounded memory", "[hostile]") {
  ckpt::test::temp_dir root;
  const fs::path dir = root / "ckpt";
  make_checkpoint(dir);
  const std::uint64_t tib = 1ull << 40;
  SECTION("the data file is small") {
    install_index(dir, claimed_index(tib / 4, tib));
  }
  SECTION("the data file is a sparse 1 TiB file") {
    install_index(dir, claimed_index(tib / 4, tib));
    fs::resize_file(dir / "data-00000.bin", tib);
  }
  SECTION("a chunk beyond the claimed file") {
    install_index(dir, claimed_index(tib / 4, 4096));
  }
  auto r = in_child(
      [&] {
        auto l = load_in_child(dir);
        if (l) return 0;
        std::printf("  refused: %s\n", l.error().what().c_str());
        return 1;
      },
      60);
  std::printf("hostile (loader): 1 TiB claim: exit %d in %.2f s, max RSS %.0f MiB\n", r.code,
              r.seconds, r.max_rss_mib);
  CHECK(r.code == 1);
  CHECK(r.seconds < 10 * sanitizer_factor);
  CHECK(r.max_rss_mib < 512 * sanitizer_factor);
}

TEST_CASE("an index of 10^7 entries is refused by the caps quickly", "[hostile]") {
  ckpt::test::temp_dir root(fs::is_directory("/dev/shm") ? fs::path("/dev/shm")
                                                         : fs::temp_directory_path());
  const fs::path dir = root / "ckpt";
  make_checkpoint(dir);
  std::string good = read_all(dir / std::string(fmt::index_file));
  // 10^7 file entries (the cap is 65536).
  std::string files = "\"files\":[";
  files.reserve(10'000'000 * 24);
  for (int i = 0; i < 10'000'000; ++i) {
    if (i > 0) files += ',';
    files += "{\"name\":\"f";
    files += std::to_string(i);
    files += "\",\"size\":0}";
  }
  const auto at = good.find("\"files\":[");
  REQUIRE(at != std::string::npos);
  good.replace(at, std::string("\"files\":[").size(), files + ",");
  install_index(dir, good);
  const double index_mib = static_cast<double>(good.size()) / (1 << 20);
  good.clear();
  good.shrink_to_fit();
  files.clear();
  files.shrink_to_fit();
  auto r = in_child(
      [&] {
        auto l = load_in_child(dir);
        if (l) return 0;
        std::printf("  refused: %.200s\n", l.error().what().c_str());
        return l.error() == ckpt::errc::limit_exceeded ? 1 : 2;
      },
      60);
  std::printf(
      "hostile (loader): 10^7 entries (%.0f MiB index): exit %d in %.2f s, max RSS %.0f "
      "MiB\n",
      index_mib, r.code, r.seconds, r.max_rss_mib);
  CHECK(r.code == 1);
  CHECK(r.seconds < 10 * sanitizer_factor);
  CHECK(r.max_rss_mib <
        (3 * index_mib + 64) * sanitizer_factor);  // the text, its padded copy, no per-entry blowup
}
