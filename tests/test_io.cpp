// The io engine against both backends (io_uring, threads) on tmpfs and the real disk.
#include "io/backend.hpp"
#include "run_coro.hpp"
#include "support.hpp"

#include <ckpt/buffer.hpp>
#include <ckpt/io.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using ckpt::aligned_buffer;
using ckpt::result;
using ckpt::io::backend_kind;
using ckpt::io::engine;
using ckpt::io::file;
using ckpt::test::run;

const char* kind_name(backend_kind k) {
  return k == backend_kind::uring ? "uring" : k == backend_kind::threads ? "threads" : "auto";
}

/// The engine of the given kind, or nullptr (with a warning) where io_uring is unavailable.
std::shared_ptr<engine> make_engine(backend_kind kind, unsigned depth = 64) {
  auto e = engine::create({.backend = kind, .queue_depth = depth, .threads = 4});
  if (!e && kind == backend_kind::uring) {
    WARN("io_uring unavailable, skipping: " << e.error().what());
    return nullptr;
  }
  REQUIRE(e);
  CHECK(e.value()->backend_name() == kind_name(kind));
  return e.value();
}

// Never put co_await inside a Catch macro: the macro repeats its argument in an unevaluated
// condition, which GCC 12's coroutine lowering mishandles (double destruction of temporaries).
template <class T>
void require_ok(const result<T>& r) {
  INFO((r ? std::string("ok") : r.error().what()));
  REQUIRE(r.has_value());
}

bool is_tmpfs(const std::filesystem::path& p) {
  return p.string().rfind("/dev/shm", 0) == 0;
}

void fill(aligned_buffer& b, std::uint64_t seed) {
  auto bytes = ckpt::test::random_bytes(b.size(), seed);
  std::memcpy(b.data(), bytes.data(), bytes.size());
}

void write_plain(const std::filesystem::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary) << content;
}

asio::awaitable<void> round_trip(engine& e, std::string path, bool real_disk) {
  const auto main_thread = std::this_thread::get_id();
  auto f = co_await e.open(AT_FDCWD, path, O_CREAT | O_RDWR | O_TRUNC | O_DIRECT);
  REQUIRE(f);
  // Completions resume the coroutine on its own executor (this thread), not the backend's.
  CHECK(std::this_thread::get_id() == main_thread);
  if (real_disk) CHECK(f.value().direct);
  INFO("direct=" << f.value().direct);

  aligned_buffer out(3 << 20);
  fill(out, 42);
  require_ok(co_await e.write(f.value(), out.span(), 0));
  require_ok(co_await e.write(f.value(), out.span().first(1 << 20), 3 << 20));  // a second extent
  CHECK(std::this_thread::get_id() == main_thread);

  aligned_buffer in(3 << 20);
  auto n = co_await e.read(f.value(), in.span(), 0);
  REQUIRE(n);
  CHECK(n.value() == in.size());
  CHECK(std::memcmp(in.data(), out.data(), in.size()) == 0);

  // A read that meets end of file returns what it got.
  auto tail = co_await e.read(f.value(), in.span(), (4 << 20) - 8192);
  REQUIRE(tail);
  CHECK(tail.value() == 8192);
  CHECK(std::memcmp(in.data(), out.data() + (1 << 20) - 8192, 8192) == 0);
  auto past = co_await e.read(f.value(), in.span(), 8 << 20);
  REQUIRE(past);
  CHECK(past.value() == 0);

  require_ok(co_await e.fsync(f.value()));
  require_ok(co_await e.fsync(f.value(), true));
  auto st = co_await e.statx(AT_FDCWD, path);
  REQUIRE(st);
  CHECK(st.value().stx_size == (4u << 20));
  require_ok(co_await e.close(f.value()));
}

asio::awaitable<void> unaligned_eof(engine& e, std::string path) {
  // A file whose size is not a multiple of the block size, read with O_DIRECT.
  write_plain(path, std::string(10000, 'x'));
  auto f = co_await e.open(AT_FDCWD, path, O_RDONLY | O_DIRECT);
  REQUIRE(f);
  aligned_buffer in(16384);
  auto n = co_await e.read(f.value(), in.span(), 0);
  REQUIRE(n);
  CHECK(n.value() == 10000);
  CHECK(std::to_integer<char>(in.data()[9999]) == 'x');
  require_ok(co_await e.close(f.value()));
}

asio::awaitable<void> errors(engine& e, std::string dir, bool real_disk) {
  // ENOENT, naming the path.
  auto missing = co_await e.open(AT_FDCWD, dir + "/missing.bin", O_RDONLY);
  REQUIRE(!missing);
  CHECK(missing.error() == std::errc::no_such_file_or_directory);
  CHECK(missing.error().what().find("open " + dir + "/missing.bin") != std::string::npos);

  // EEXIST from O_CREAT|O_EXCL twice.
  auto a = co_await e.open(AT_FDCWD, dir + "/a.bin", O_CREAT | O_EXCL | O_RDWR | O_DIRECT);
  REQUIRE(a);
  auto again = co_await e.open(AT_FDCWD, dir + "/a.bin", O_CREAT | O_EXCL | O_RDWR | O_DIRECT);
  REQUIRE(!again);
  CHECK(again.error() == std::errc::file_exists);

  aligned_buffer buf(8192);
  fill(buf, 7);
  // EINVAL from a misaligned O_DIRECT write, where the file really is direct.
  if (real_disk && a.value().direct) {
    auto bad = co_await e.write(a.value(), buf.span().subspan(1, 4096), 4096);
    REQUIRE(!bad);
    CHECK(bad.error() == std::errc::invalid_argument);
    CHECK(bad.error().what().find("write " + dir + "/a.bin at offset 4096") != std::string::npos);
  }

  // EBADF: fd -1, and a closed fd.
  // (A named file: GCC 12 destroys a braced temporary in a co_await expression twice.)
  const file nofile{.fd = -1, .direct = false, .name = "nofile"};
  auto bad_fd = co_await e.write(nofile, buf.span(), 0);
  REQUIRE(!bad_fd);
  CHECK(bad_fd.error() == std::errc::bad_file_descriptor);
  CHECK(bad_fd.error().what().find("write nofile at offset 0") != std::string::npos);
  require_ok(co_await e.close(a.value()));
  auto closed = co_await e.write(a.value(), buf.span(), 0);
  REQUIRE(!closed);
  CHECK(closed.error() == std::errc::bad_file_descriptor);
  auto closed_read = co_await e.read(a.value(), buf.span(), 0);
  REQUIRE(!closed_read);
  CHECK(closed_read.error() == std::errc::bad_file_descriptor);
}

asio::awaitable<std::string> read_all(engine& e, std::string path) {
  auto f = co_await e.open(AT_FDCWD, path, O_RDONLY);
  REQUIRE(f);
  std::string s(64, '\0');
  auto n = co_await e.read(f.value(), std::as_writable_bytes(std::span(s)), 0);
  REQUIRE(n);
  s.resize(n.value());
  require_ok(co_await e.close(f.value()));
  co_return s;
}

asio::awaitable<void> metadata_ops(engine& e, std::string dir) {
  // fallocate + statx.
  auto f = co_await e.open(AT_FDCWD, dir + "/alloc.bin", O_CREAT | O_RDWR);
  REQUIRE(f);
  require_ok(co_await e.fallocate(f.value(), 0, 0, 1 << 20));
  auto st = co_await e.statx(AT_FDCWD, dir + "/alloc.bin");
  REQUIRE(st);
  CHECK(st.value().stx_size == (1u << 20));
  require_ok(co_await e.fallocate(f.value(), FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20));
  st = co_await e.statx(AT_FDCWD, dir + "/alloc.bin");
  REQUIRE(st);
  CHECK(st.value().stx_size == (1u << 20));
  require_ok(co_await e.close(f.value()));
  auto no_stat = co_await e.statx(AT_FDCWD, dir + "/nothing");
  REQUIRE(!no_stat);
  CHECK(no_stat.error() == std::errc::no_such_file_or_directory);

  // mkdir, twice.
  require_ok(co_await e.mkdir(AT_FDCWD, dir + "/sub"));
  auto twice = co_await e.mkdir(AT_FDCWD, dir + "/sub");
  REQUIRE(!twice);
  CHECK(twice.error() == std::errc::file_exists);
  st = co_await e.statx(AT_FDCWD, dir + "/sub");
  REQUIRE(st);
  CHECK(S_ISDIR(st.value().stx_mode));

  // rename: NOREPLACE refuses an existing target; EXCHANGE swaps; plain rename moves.
  write_plain(dir + "/A", "content A");
  write_plain(dir + "/B", "content B");
  auto noreplace = co_await e.rename(AT_FDCWD, dir + "/A", AT_FDCWD, dir + "/B", RENAME_NOREPLACE);
  REQUIRE(!noreplace);
  CHECK(noreplace.error() == std::errc::file_exists);
  CHECK(noreplace.error().what().find("rename " + dir + "/A to " + dir + "/B") !=
        std::string::npos);
  require_ok(co_await e.rename(AT_FDCWD, dir + "/A", AT_FDCWD, dir + "/B", RENAME_EXCHANGE));
  {
    auto got = co_await read_all(e, dir + "/A");
    CHECK(got == "content B");
  }
  {
    auto got = co_await read_all(e, dir + "/B");
    CHECK(got == "content A");
  }
  require_ok(co_await e.rename(AT_FDCWD, dir + "/A", AT_FDCWD, dir + "/sub/C", RENAME_NOREPLACE));
  {
    auto got = co_await read_all(e, dir + "/sub/C");
    CHECK(got == "content B");
  }

  // unlink a file, then the (non-empty, then empty) directory.
  auto not_empty = co_await e.unlink(AT_FDCWD, dir + "/sub", AT_REMOVEDIR);
  REQUIRE(!not_empty);
  CHECK(not_empty.error() == std::errc::directory_not_empty);
  require_ok(co_await e.unlink(AT_FDCWD, dir + "/sub/C"));
  require_ok(co_await e.unlink(AT_FDCWD, dir + "/sub", AT_REMOVEDIR));
  auto gone = co_await e.statx(AT_FDCWD, dir + "/sub");
  REQUIRE(!gone);
  auto unlink_missing = co_await e.unlink(AT_FDCWD, dir + "/sub/C");
  REQUIRE(!unlink_missing);
  CHECK(unlink_missing.error() == std::errc::no_such_file_or_directory);
}

struct stress_state {
  std::atomic<int> ok{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> other{0};
};

asio::awaitable<void> small_write(engine& e, const file& f, std::uint64_t i, stress_state& s) {
  std::array<std::byte, 64> data;
  data.fill(std::byte(i & 0xff));
  auto r = co_await e.write(f, data, i * data.size());
  if (r) {
    ++s.ok;
  } else if (r.error() == ckpt::errc::cancelled) {
    ++s.cancelled;
  } else {
    ++s.other;
    FAIL_CHECK(r.error().what());
  }
}

asio::awaitable<void> small_read(engine& e, const file& f, std::uint64_t i, stress_state& s) {
  std::array<std::byte, 64> data{};
  auto r = co_await e.read(f, data, i * data.size());
  if (r && r.value() == data.size() && data[0] == std::byte(i & 0xff) && data[63] == data[0]) {
    ++s.ok;
  } else {
    ++s.other;
  }
}

/// A seam wrapper: halves every write (short writes) and fails every op of one kind with EIO.
class faulty_backend final : public ckpt::io::backend {
 public:
  faulty_backend(std::unique_ptr<backend> inner, ckpt::io::op_kind fail_kind)
      : inner_(std::move(inner)), fail_kind_(fail_kind) {}
  std::string_view name() const noexcept override { return "faulty"; }
  void submit(ckpt::io::op* o) noexcept override {
    ++count_;
    if (o->req.kind == fail_kind_) {
      o->complete(-EIO);
      return;
    }
    if (o->req.kind == ckpt::io::op_kind::write && o->req.length > 4096) {
      o->req.length = (o->req.length / 2 + 4095) & ~std::uint64_t{4095};
      ++short_writes_;
    }
    inner_->submit(o);
  }
  void shutdown() noexcept override { inner_->shutdown(); }
  int short_writes() const { return short_writes_; }
  int count() const { return count_; }

 private:
  std::unique_ptr<backend> inner_;
  ckpt::io::op_kind fail_kind_;
  std::atomic<int> count_{0};
  std::atomic<int> short_writes_{0};
};

asio::awaitable<void> faulty_round_trip(engine& e, std::string path) {
  auto f = co_await e.open(AT_FDCWD, path, O_CREAT | O_RDWR | O_DIRECT);  // op 1
  REQUIRE(f);
  aligned_buffer out(1 << 20);
  fill(out, 9);
  require_ok(co_await e.write(f.value(), out.span(), 0));  // ops 2..: halved until done
  aligned_buffer in(1 << 20);
  auto n = co_await e.read(f.value(), in.span(), 0);
  REQUIRE(n);
  CHECK(n.value() == in.size());
  CHECK(std::memcmp(in.data(), out.data(), in.size()) == 0);
  auto failed = co_await e.fsync(f.value());  // the op that fails
  REQUIRE(!failed);
  CHECK(failed.error() == std::errc::io_error);
  CHECK(failed.error().what().find("fsync " + path) != std::string::npos);
  require_ok(co_await e.close(f.value()));
}

/// A seam wrapper that refuses O_DIRECT opens (like an old tmpfs) and records every op with its
/// path and result, through a wrapper op of its own.
class recording_backend final : public ckpt::io::backend {
 public:
  explicit recording_backend(std::unique_ptr<backend> inner) : inner_(std::move(inner)) {}
  std::string_view name() const noexcept override { return "recording"; }
  void submit(ckpt::io::op* o) noexcept override {
    if (o->req.kind == ckpt::io::op_kind::open && (o->req.flags & O_DIRECT)) {
      record(o->req, -EINVAL);
      o->complete(-EINVAL);
      return;
    }
    inner_->submit(new recorded_op(this, o));
  }
  void shutdown() noexcept override { inner_->shutdown(); }
  std::vector<std::string> log() {
    std::lock_guard lock(mutex_);
    return log_;
  }

 private:
  struct recorded_op final : ckpt::io::op {
    recorded_op(recording_backend* b, ckpt::io::op* o) : op(o->req), b(b), original(o) {}
    void complete(int res) noexcept override {
      b->record(req, res);
      auto* o = original;
      delete this;
      o->complete(res);
    }
    recording_backend* b;
    ckpt::io::op* original;
  };
  void record(const ckpt::io::request& r, int res) {
    std::string name = r.path ? r.path : std::string(r.file_name);
    auto slash = name.rfind('/');
    std::lock_guard lock(mutex_);
    log_.push_back(std::string(to_string(r.kind)) + " " + name.substr(slash + 1) + " " +
                   std::to_string(res));
  }
  std::unique_ptr<backend> inner_;
  std::mutex mutex_;
  std::vector<std::string> log_;
};

asio::awaitable<void> fallback_round_trip(engine& e, std::string path) {
  auto f = co_await e.open(AT_FDCWD, path, O_CREAT | O_EXCL | O_RDWR | O_DIRECT);
  require_ok(f);
  CHECK_FALSE(f.value().direct);
  const std::string text = "buffered after all";
  require_ok(co_await e.write(f.value(), std::as_bytes(std::span(text)), 0));
  std::string back(64, '\0');
  auto n = co_await e.read(f.value(), std::as_writable_bytes(std::span(back)), 0);
  require_ok(n);
  CHECK(back.substr(0, n.value()) == text);
  require_ok(co_await e.close(f.value()));
}

}  // namespace

TEST_CASE("io: O_DIRECT write/read round trip, EOF, fsync, statx", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  auto root = GENERATE(from_range(ckpt::test::test_roots()));
  INFO(kind_name(kind) << " on " << root);
  auto e = make_engine(kind);
  if (!e) return;
  ckpt::test::temp_dir dir(root);
  run(round_trip(*e, (dir / "data-00001.bin").string(), !is_tmpfs(root)));
  run(unaligned_eof(*e, (dir / "odd.bin").string()));
}

TEST_CASE("io: errors are clear", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  auto root = GENERATE(from_range(ckpt::test::test_roots()));
  INFO(kind_name(kind) << " on " << root);
  auto e = make_engine(kind);
  if (!e) return;
  ckpt::test::temp_dir dir(root);
  run(errors(*e, dir.path().string(), !is_tmpfs(root)));
}

TEST_CASE("io: fallocate, statx, mkdir, rename, unlink", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  auto root = GENERATE(from_range(ckpt::test::test_roots()));
  INFO(kind_name(kind) << " on " << root);
  auto e = make_engine(kind);
  if (!e) return;
  ckpt::test::temp_dir dir(root);
  run(metadata_ops(*e, dir.path().string()));
}

TEST_CASE("io: thousands of concurrent small ops with queue depth 16", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  auto root = GENERATE(from_range(ckpt::test::test_roots()));
  INFO(kind_name(kind) << " on " << root);
  auto e = make_engine(kind, 16);
  if (!e) return;
  ckpt::test::temp_dir dir(root);
  auto f = run(e->open(AT_FDCWD, (dir / "many.bin").string(), O_CREAT | O_RDWR));
  REQUIRE(f);
  constexpr int n = 5000;
  stress_state writes;
  stress_state reads;
  {
    asio::io_context ctx;
    for (int i = 0; i < n; ++i)
      asio::co_spawn(ctx, small_write(*e, f.value(), i, writes), asio::detached);
    ctx.run();
    ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  }
  CHECK(writes.ok == n);
  {
    asio::io_context ctx;
    for (int i = 0; i < n; ++i)
      asio::co_spawn(ctx, small_read(*e, f.value(), i, reads), asio::detached);
    ctx.run();
    ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  }
  CHECK(reads.ok == n);
  REQUIRE(run(e->close(f.value())));
}

TEST_CASE("io: destroying the engine with ops in flight", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  INFO(kind_name(kind));
  auto e = make_engine(kind, 4);
  if (!e) return;
  ckpt::test::temp_dir dir(ckpt::test::test_roots().back());
  auto f = run(e->open(AT_FDCWD, (dir / "busy.bin").string(), O_CREAT | O_RDWR));
  REQUIRE(f);
  constexpr int n = 2000;
  stress_state s;
  asio::io_context ctx;
  for (int i = 0; i < n; ++i)
    asio::co_spawn(ctx, small_write(*e, f.value(), i, s), asio::detached);
  ctx.poll();  // every coroutine has submitted its op; a few completed
  auto t0 = std::chrono::steady_clock::now();
  e.reset();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  CHECK(s.ok + s.cancelled == n);
  CHECK(s.other == 0);
  // Usually some parked ops were cancelled, but a fast backend (or a slow sanitizer build) may
  // have finished all of them during poll().
  if (s.cancelled == 0) WARN("no op was parked at shutdown");
  ::close(f.value().fd);
}

TEST_CASE("io: an engine over a wrapped backend (short writes, injected EIO)", "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  INFO(kind_name(kind));
  ckpt::io::engine_options opts{.backend = kind};
  auto inner = kind == backend_kind::uring ? ckpt::io::make_uring_backend(opts)
                                           : ckpt::io::make_thread_backend(opts);
  if (!inner) return;
  auto wrapper =
      std::make_unique<faulty_backend>(std::move(inner).value(), ckpt::io::op_kind::fsync);
  auto* w = wrapper.get();
  auto e = ckpt::io::make_engine(std::move(wrapper));
  REQUIRE(e);
  CHECK(e.value()->backend_name() == "faulty");
  ckpt::test::temp_dir dir(ckpt::test::test_roots().back());
  run(faulty_round_trip(*e.value(), (dir / "f.bin").string()));
  CHECK(w->short_writes() > 1);
  CHECK(w->count() > 5);
}

TEST_CASE("io: CKPT_IO_BACKEND selects the backend", "[io]") {
  const char* old = std::getenv("CKPT_IO_BACKEND");
  std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("CKPT_IO_BACKEND", "threads", 1);
  auto t = engine::create();
  REQUIRE(t);
  CHECK(t.value()->backend_name() == "threads");
  ::setenv("CKPT_IO_BACKEND", "uring", 1);
  auto u = engine::create();
  if (u) CHECK(u.value()->backend_name() == "uring");
  ::setenv("CKPT_IO_BACKEND", "bogus", 1);
  auto b = engine::create();
  REQUIRE(!b);
  CHECK(b.error() == ckpt::errc::invalid_argument);
  // An explicit backend wins over the variable.
  ::setenv("CKPT_IO_BACKEND", "threads", 1);
  auto x = engine::create({.backend = backend_kind::uring});
  if (x) CHECK(x.value()->backend_name() == "uring");
  if (saved) {
    ::setenv("CKPT_IO_BACKEND", saved->c_str(), 1);
  } else {
    ::unsetenv("CKPT_IO_BACKEND");
  }
}

TEST_CASE("io: O_DIRECT refused falls back to buffered IO; a recording wrapper sees every op",
          "[io]") {
  auto kind = GENERATE(backend_kind::uring, backend_kind::threads);
  INFO(kind_name(kind));
  ckpt::io::engine_options opts{.backend = kind};
  auto inner = kind == backend_kind::uring ? ckpt::io::make_uring_backend(opts)
                                           : ckpt::io::make_thread_backend(opts);
  if (!inner) return;
  auto wrapper = std::make_unique<recording_backend>(std::move(inner).value());
  auto* w = wrapper.get();
  auto e = ckpt::io::make_engine(std::move(wrapper));
  REQUIRE(e);
  ckpt::test::temp_dir dir(ckpt::test::test_roots().back());
  run(fallback_round_trip(*e.value(), (dir / "data-00001.bin").string()));
  auto log = w->log();
  REQUIRE(log.size() == 6);
  CHECK(log[0] == "open data-00001.bin -22");
  CHECK(log[1].rfind("open data-00001.bin ", 0) == 0);
  CHECK(log[2] == "write data-00001.bin 18");
  CHECK(log[3] == "read data-00001.bin 18");
  CHECK(log[4] == "read data-00001.bin 0");  // end of file
  CHECK(log[5] == "close data-00001.bin 0");
}

asio::awaitable<void> blocked_read(engine& e, file f, stress_state& s) {
  std::array<std::byte, 1> byte{};
  auto r = co_await e.read(f, byte, 0);
  if (!r && r.error() == ckpt::errc::cancelled) {
    ++s.cancelled;
  } else {
    ++s.other;
  }
}

TEST_CASE("io: shutdown cancels an op that would block in the kernel forever", "[io]") {
  // A read from an empty pipe never completes by itself: ~engine must cancel it, not hang.
  auto e = make_engine(backend_kind::uring, 4);
  if (!e) return;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  stress_state s;
  asio::io_context ctx;
  asio::co_spawn(ctx, blocked_read(*e, file{.fd = fds[0], .direct = false, .name = "pipe"}, s),
                 asio::detached);
  ctx.poll();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the read is in the kernel
  auto t0 = std::chrono::steady_clock::now();
  e.reset();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  CHECK(s.cancelled == 1);
  ::close(fds[0]);
  ::close(fds[1]);
}
