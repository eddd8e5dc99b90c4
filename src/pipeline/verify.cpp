// verify_checkpoint: the load pipeline's checks without the destinations. The small files are
// read synchronously (checkpoint_files.hpp); the data files are streamed as aligned extents
// through the runtime's IO engine with a bounded number of bytes in flight, and each extent's
// chunks are checksummed and decoded into per-thread scratch memory on the CPU pool. Every
// problem is recorded; nothing stops at the first one.
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "io/async.hpp"
#include "pipeline/runtime_impl.hpp"

#include <ckpt/shard.hpp>
#include <ckpt/verify.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

namespace ckpt {

namespace asio = boost::asio;

namespace detail {

namespace {

constexpr std::uint64_t max_commit_file = 1ull << 20;
constexpr std::uint64_t max_small_file = 1ull << 30;  // metadata.json / job.json cap (as load)

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads `name` below dir_fd (no symlinks) into a string with parse padding reserved behind it.
// `expect` set: the size must match. Problems are recorded; returns none on any problem.
std::optional<std::string> read_small(int dir_fd, const std::string& name,
                                      std::optional<std::uint64_t> expect, std::uint64_t cap,
                                      std::vector<verify_problem>& problems) {
  auto problem = [&](std::string msg) { problems.push_back({name, {}, -1, -1, std::move(msg)}); };
  fd_guard f(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (f.get() < 0) {
    problem(errno == ENOENT ? "missing" : "cannot open: " + std::string(std::strerror(errno)));
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) {
    problem("cannot stat: " + std::string(std::strerror(errno)));
    return std::nullopt;
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > cap) {
    problem("is " + std::to_string(size) + " bytes, more than the cap of " + std::to_string(cap));
    return std::nullopt;
  }
  if (expect && size != *expect) {
    problem("is " + std::to_string(size) + " bytes, the commit marker says " +
            std::to_string(*expect) + (size < *expect ? " (truncated)" : ""));
    return std::nullopt;
  }
  std::string text;
  text.reserve(size + format::parse_padding);
  text.resize(size);
  std::uint64_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(f.get(), text.data() + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      problem("read error: " + std::string(std::strerror(errno)));
      return std::nullopt;
    }
    if (n == 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  if (got != size) {
    problem("shrank while being read");
    return std::nullopt;
  }
  return text;
}

// A format parser's message without its leading "<file>: " (the problem names the file).
std::string without_prefix(const std::string& file, std::string m) {
  if (m.rfind(file + ": ", 0) == 0) m.erase(0, file.size() + 2);
  return m;
}

bool check_sum(const std::string& name, const std::string& text, std::uint64_t want,
               std::vector<verify_problem>& problems) {
  std::uint64_t got = format::checksum(std::as_bytes(std::span(text)));
  if (got == want) return true;
  problems.push_back({name,
                      {},
                      -1,
                      -1,
                      "checksum mismatch (commit marker says " + format::checksum_hex(want) +
                          ", file has " + format::checksum_hex(got) + ")"});
  return false;
}

std::optional<boost::json::object> parse_object(const std::string& name, const std::string& text,
                                                std::vector<verify_problem>& problems) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) {
    problems.push_back({name, {}, -1, -1, "not valid JSON (" + ec.message() + ")"});
    return std::nullopt;
  }
  if (!v.is_object()) {
    problems.push_back({name, {}, -1, -1, "not a JSON object"});
    return std::nullopt;
  }
  return std::move(v.as_object());
}

// A small file recorded in COMMIT: read, size, checksum.
std::optional<std::string> read_checked(int dir_fd, std::string_view name, std::uint64_t bytes,
                                        std::uint64_t xxh3, std::uint64_t cap,
                                        std::vector<verify_problem>& problems) {
  const std::string n(name);
  auto text = read_small(dir_fd, n, bytes, cap, problems);
  if (!text || !check_sum(n, *text, xxh3, problems)) return std::nullopt;
  return text;
}

// The small files of a sharded checkpoint, recorded in its COMMIT.
void read_sharded_files(int dir_fd, const std::string& commit_text, checkpoint_files& cf) {
  auto& problems = cf.problems;
  const std::string commit_name(format::commit_file);
  auto cm = format::parse_sharded_commit(commit_text);
  if (!cm) {
    problems.push_back(
        {commit_name, {}, -1, -1, without_prefix(commit_name, cm.error().message())});
    return;
  }
  cf.sharded_commit = cm.value();
  const auto& c = *cf.sharded_commit;
  if (auto meta = read_checked(dir_fd, format::metadata_file, c.metadata_bytes, c.metadata_xxh3,
                               max_small_file, problems)) {
    cf.metadata = parse_object(std::string(format::metadata_file), *meta, problems);
  }
  if (c.has_job) {
    if (auto job = read_checked(dir_fd, format::job_file, c.job_bytes, c.job_xxh3, max_small_file,
                                problems)) {
      cf.job = parse_object(std::string(format::job_file), *job, problems);
    }
  }
  const std::string name(format::sharded_index_file);
  format::sharded_limits limits;
  auto text =
      read_checked(dir_fd, name, c.index_bytes, c.index_xxh3, limits.max_index_bytes, problems);
  if (!text) return;
  auto ix = format::parse_sharded_index(*text, limits);
  if (!ix) {
    problems.push_back({name, {}, -1, -1, without_prefix(name, ix.error().message())});
    return;
  }
  cf.sharded_index = std::move(ix.value());
  std::uint64_t logical = 0;
  for (const auto& le : cf.sharded_index->leaves)
    logical += le.num_bytes;
  if (logical != c.logical_bytes) {
    problems.push_back({commit_name,
                        {},
                        -1,
                        -1,
                        "logical_bytes is " + std::to_string(c.logical_bytes) +
                            ", the sharded index's leaves hold " + std::to_string(logical)});
  }
  if (c.ranks != cf.sharded_index->ranks.size()) {
    problems.push_back({commit_name,
                        {},
                        -1,
                        -1,
                        "ranks is " + std::to_string(c.ranks) + ", the sharded index lists " +
                            std::to_string(cf.sharded_index->ranks.size())});
  }
}

}  // namespace

result<checkpoint_files> read_checkpoint_files(const std::filesystem::path& dir) {
  const std::string where = dir.string();
  fd_guard d(::open(where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0) {
    if (errno == ENOENT) return fail(errc::not_found, "no checkpoint at " + where);
    return fail(system_error(errno, "open checkpoint " + where));
  }
  checkpoint_files cf;
  auto& problems = cf.problems;
  const std::string commit_name(format::commit_file);
  auto commit_text = read_small(d.get(), commit_name, std::nullopt, max_commit_file, problems);
  cf.has_commit_file = commit_text.has_value() || problems.back().message != "missing";
  if (!commit_text) return cf;
  if (format::is_sharded_commit_text(*commit_text)) {
    read_sharded_files(d.get(), *commit_text, cf);
    return cf;
  }
  auto cm = format::parse_commit(*commit_text);
  if (!cm) {
    problems.push_back(
        {commit_name, {}, -1, -1, without_prefix(commit_name, cm.error().message())});
    return cf;
  }
  cf.commit = cm.value();
  const auto& c = *cf.commit;
  if (auto meta = read_checked(d.get(), format::metadata_file, c.metadata_bytes, c.metadata_xxh3,
                               max_small_file, problems)) {
    cf.metadata = parse_object(std::string(format::metadata_file), *meta, problems);
  }
  if (c.has_job) {
    if (auto job = read_checked(d.get(), format::job_file, c.job_bytes, c.job_xxh3, max_small_file,
                                problems)) {
      cf.job = parse_object(std::string(format::job_file), *job, problems);
    }
  }
  format::parse_limits limits;
  if (auto text = read_checked(d.get(), format::index_file, c.index_bytes, c.index_xxh3,
                               limits.max_index_bytes, problems)) {
    auto ix = format::parse_index(*text, limits);
    if (!ix) {
      const std::string name(format::index_file);
      problems.push_back({name, {}, -1, -1, without_prefix(name, ix.error().message())});
    } else {
      cf.index = std::move(ix.value());
      std::uint64_t logical = 0, stored = 0;
      for (const auto& le : cf.index->leaves)
        logical += le.num_bytes;
      for (const auto& fe : cf.index->files)
        stored += fe.size;
      if (logical != c.logical_bytes) {
        problems.push_back({commit_name,
                            {},
                            -1,
                            -1,
                            "logical_bytes is " + std::to_string(c.logical_bytes) +
                                ", the index's leaves hold " + std::to_string(logical)});
      }
      if (stored != c.stored_bytes) {
        problems.push_back({commit_name,
                            {},
                            -1,
                            -1,
                            "stored_bytes is " + std::to_string(c.stored_bytes) +
                                ", the index's data files hold " + std::to_string(stored)});
      }
    }
  }
  return cf;
}

error first_problem(const std::filesystem::path& dir, const checkpoint_files& cf) {
  const std::string where = dir.string();
  if (cf.problems.empty()) return error(errc::corrupt, where + ": not a checkpoint");
  const auto& p = cf.problems.front();
  std::string msg = where + "/" + p.file + ": " + p.message;
  if (!cf.commit && !cf.sharded_commit)
    return error(errc::not_committed,
                 where + " is not a committed checkpoint (" + p.file + ": " + p.message + ")");
  return error(errc::corrupt, std::move(msg));
}

}  // namespace detail

namespace {

constexpr std::size_t io_align = 4096;
constexpr std::uint64_t max_extent = 8ull << 20;  // bytes read by one request
constexpr std::uint64_t max_gap = 256ull << 10;   // unneeded bytes read to merge requests

struct chunk_ref {
  std::uint32_t leaf;
  std::uint32_t chunk;
};

// One aligned read covering one or more chunks of one file.
struct extent {
  std::uint32_t file;
  std::uint64_t start;   // aligned
  std::uint64_t length;  // aligned
  std::vector<chunk_ref> chunks;
};

// The same extent planning as the load pipeline (all leaves): chunks sorted by offset per file,
// merged across small gaps up to max_extent, files interleaved.
std::vector<extent> plan_extents(const format::index& ix, const std::vector<bool>& readable) {
  struct ref {
    std::uint64_t offset, end;
    chunk_ref c;
  };
  std::map<std::uint32_t, std::vector<ref>> by_file;
  for (std::uint32_t li = 0; li < ix.leaves.size(); ++li) {
    const auto& le = ix.leaves[li];
    for (std::uint32_t ci = 0; ci < le.chunks.size(); ++ci) {
      const auto& c = le.chunks[ci];
      if (!readable[c.file]) continue;
      by_file[c.file].push_back({c.offset, c.offset + c.stored_size, {li, ci}});
    }
  }
  std::vector<extent> out;
  for (auto& [file, refs] : by_file) {
    std::sort(refs.begin(), refs.end(),
              [](const ref& a, const ref& b) { return a.offset < b.offset; });
    extent cur{file, 0, 0, {}};
    for (const auto& r : refs) {
      std::uint64_t s = r.offset / io_align * io_align;
      std::uint64_t e = align_up(r.end, io_align);
      if (!cur.chunks.empty() && s <= cur.start + cur.length + max_gap &&
          e - cur.start <= max_extent) {
        cur.length = std::max(cur.length, e - cur.start);
      } else {
        if (!cur.chunks.empty()) out.push_back(std::move(cur));
        cur = extent{file, s, e - s, {}};
      }
      cur.chunks.push_back(r.c);
    }
    if (!cur.chunks.empty()) out.push_back(std::move(cur));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const extent& a, const extent& b) { return a.start < b.start; });
  return out;
}

struct verifier : std::enable_shared_from_this<verifier> {
  std::shared_ptr<runtime> rt;
  const format::index* ix = nullptr;
  std::vector<io::file> files;
  std::vector<extent> extents;
  std::function<void(const verify_progress&)> progress_cb;
  std::unique_ptr<detail::async_budget> in_flight;
  verify_progress progress;
  std::uint64_t bytes_read = 0;
  std::uint64_t chunks_ok = 0;
  std::size_t left = 0;
  detail::result_event done;
  std::mutex m;  // guards `problems` (appended from the CPU pool)
  std::vector<std::pair<std::uint64_t, verify_problem>> problems;  // (sort key, problem)

  io::engine& io() { return rt->io(); }

  void add_problem(const chunk_ref& r, std::string message) {
    const auto& le = ix->leaves[r.leaf];
    const auto& c = le.chunks[r.chunk];
    std::lock_guard l(m);
    problems.push_back(
        {c.offset, verify_problem{ix->files[c.file].name, le.path, r.chunk,
                                  static_cast<std::int64_t>(c.offset), std::move(message)}});
  }

  // Checks the chunks of extent `i`, whose first `data.size()` bytes were read. Returns the
  // number of sound chunks. Runs on the CPU pool.
  std::uint64_t check_extent(std::size_t i, std::span<const std::byte> data) {
    thread_local std::vector<std::byte> scratch;
    const extent& e = extents[i];
    std::uint64_t ok = 0;
    for (const auto& r : e.chunks) {
      const auto& le = ix->leaves[r.leaf];
      const auto& c = le.chunks[r.chunk];
      const std::uint64_t rel = c.offset - e.start;
      if (rel + c.stored_size > data.size()) {
        add_problem(r, "beyond the end of the file (file has " +
                           std::to_string(e.start + data.size()) + " bytes, chunk ends at " +
                           std::to_string(c.offset + c.stored_size) + ")");
        continue;
      }
      std::span<const std::byte> stored = data.subspan(rel, c.stored_size);
      std::uint64_t got = format::checksum(stored);
      if (got != c.xxh3) {
        add_problem(r, "checksum mismatch (index says " + format::checksum_hex(c.xxh3) +
                           ", data has " + format::checksum_hex(got) + ")");
        continue;
      }
      // A raw chunk decodes to its stored bytes (stored == raw is checked by the index parser):
      // the checksum already proved it; skip the copy.
      if (c.codec != format::codec::raw) {
        if (scratch.size() < c.raw_size) scratch.resize(c.raw_size);
        auto d = format::decode_chunk(c.codec, stored, dtype_size(le.dtype),
                                      std::span(scratch.data(), c.raw_size));
        if (!d) {
          add_problem(r, "does not decode: " + d.error().message());
          continue;
        }
      }
      ++ok;
    }
    return ok;
  }

  asio::awaitable<void> check_async(std::uint64_t* ok, std::size_t i,
                                    std::span<const std::byte> data) {
    *ok = check_extent(i, data);
    co_return;
  }

  asio::awaitable<void> read_one(std::size_t i) {
    auto self = shared_from_this();
    auto& rti = detail::access::internals(*rt);
    const extent& e = extents[i];
    aligned_buffer buf = rti.buffers.take(e.length);
    auto n = co_await io().read(files[e.file], buf.span(), e.start);
    if (!n) {
      const std::string msg = "read error: " + n.error().what();
      for (const auto& r : e.chunks)
        add_problem(r, msg);
    } else {
      bytes_read += n.value();
      std::uint64_t ok = 0;
      auto data = std::span<const std::byte>(buf.data(), n.value());
      co_await asio::co_spawn(rti.pool, check_async(&ok, i, data), asio::use_awaitable);
      chunks_ok += ok;
    }
    rti.buffers.give(std::move(buf));
    in_flight->release(e.length);
    progress.bytes_done += e.length;
    progress.chunks_done += e.chunks.size();
    if (progress_cb) progress_cb(progress);
    if (--left == 0) done.set(success());
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    auto ex = co_await asio::this_coro::executor;
    left = extents.size();
    for (const auto& e : extents) {
      progress.bytes_total += e.length;
      progress.chunks_total += e.chunks.size();
    }
    if (progress_cb) progress_cb(progress);
    if (left == 0) co_return;
    for (std::size_t i = 0; i < extents.size(); ++i) {
      co_await in_flight->acquire(extents[i].length);
      asio::co_spawn(ex, read_one(i), asio::detached);
    }
    (void)co_await done.wait_async();
  }
};

asio::awaitable<result<verify_report>> verify_sharded_impl(std::shared_ptr<runtime> rt,
                                                           std::filesystem::path path,
                                                           detail::checkpoint_files cf,
                                                           verify_options opt);

asio::awaitable<result<verify_report>> verify_impl(std::shared_ptr<runtime> rt,
                                                   std::filesystem::path path, verify_options opt) {
  auto& io = rt->io();
  // The small files are a few synchronous reads on the pipeline thread, as a load's are a few
  // awaited ones.
  CKPT_CO_TRY(detail::checkpoint_files cf, detail::read_checkpoint_files(path));
  if (cf.sharded()) {
    co_return co_await verify_sharded_impl(rt, std::move(path), std::move(cf), std::move(opt));
  }
  verify_report rep;
  rep.problems = std::move(cf.problems);
  rep.committed = cf.commit && cf.index && cf.metadata && rep.problems.empty();
  if (!cf.index) co_return rep;
  const format::index& ix = *cf.index;
  rep.files = ix.files.size();
  rep.leaves = ix.leaves.size();
  for (const auto& le : ix.leaves) {
    rep.chunks += le.chunks.size();
    rep.logical_bytes += le.num_bytes;
  }
  for (const auto& fe : ix.files)
    rep.stored_bytes += fe.size;

  const std::string where = path.string();
  auto v = std::make_shared<verifier>();
  v->rt = rt;
  v->ix = &ix;
  v->progress_cb = opt.progress;
  v->in_flight = std::make_unique<detail::async_budget>(
      std::max<std::uint64_t>(opt.max_in_flight_bytes, max_extent));
  v->files.resize(ix.files.size());
  std::vector<bool> readable(ix.files.size(), false);
  auto dir = co_await io.open(AT_FDCWD, where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!dir) co_return fail(std::move(dir).error().with_context("open checkpoint " + where));
  for (std::size_t f = 0; f < ix.files.size(); ++f) {
    const auto& fe = ix.files[f];
    auto problem = [&](std::string msg) { rep.problems.push_back({fe.name, {}, -1, -1, msg}); };
    const int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (opt.direct_io ? O_DIRECT : 0);
    auto of = co_await io.open(dir.value().fd, fe.name, flags);
    if (!of) {
      problem(of.error() == std::errc::no_such_file_or_directory
                  ? std::string("missing")
                  : "cannot open: " + of.error().what());
      continue;
    }
    v->files[f] = of.value();
    readable[f] = true;
    auto st = co_await io.statx(of.value().fd, "", AT_EMPTY_PATH);
    if (!st) {
      problem("cannot stat: " + st.error().what());
    } else if (st.value().stx_size != fe.size) {
      problem("is " + std::to_string(st.value().stx_size) + " bytes, the index says " +
              std::to_string(fe.size) + (st.value().stx_size < fe.size ? " (truncated)" : ""));
    }
  }
  (void)co_await io.close(dir.value());
  // Chunks of files that could not be opened: each one is unreadable.
  for (std::uint32_t li = 0; li < ix.leaves.size(); ++li) {
    const auto& le = ix.leaves[li];
    for (std::uint32_t ci = 0; ci < le.chunks.size(); ++ci) {
      if (!readable[le.chunks[ci].file]) {
        v->add_problem({li, ci},
                       "unreadable: " + ix.files[le.chunks[ci].file].name + " cannot be opened");
      }
    }
  }
  v->extents = plan_extents(ix, readable);
  co_await v->run();
  for (auto& f : v->files) {
    if (f.fd >= 0) (void)co_await io.close(f);
  }
  // Chunk problems sorted by file and offset, so that reports are deterministic.
  std::stable_sort(v->problems.begin(), v->problems.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.file, a.first) < std::tie(b.second.file, b.first);
  });
  for (auto& [key, p] : v->problems)
    rep.problems.push_back(std::move(p));
  rep.chunks_checked = v->chunks_ok;
  rep.bytes_read = v->bytes_read;
  co_return rep;
}

// A sharded checkpoint: its own files (already read into `cf`), then every rank's checkpoint
// in full, each rank's COMMIT against the sharded index and every slice against its rank's index.
asio::awaitable<result<verify_report>> verify_sharded_impl(std::shared_ptr<runtime> rt,
                                                           std::filesystem::path path,
                                                           detail::checkpoint_files cf,
                                                           verify_options opt) {
  verify_report rep;
  rep.problems = std::move(cf.problems);
  rep.committed = cf.committed();
  if (!cf.sharded_index) co_return rep;
  const format::sharded_index& six = *cf.sharded_index;
  rep.leaves = six.leaves.size();
  for (const auto& le : six.leaves)
    rep.logical_bytes += le.num_bytes;
  for (std::uint32_t r = 0; r < six.ranks.size(); ++r) {
    const auto& re = six.ranks[r];
    const std::filesystem::path dir = path / re.dir;
    auto problem = [&](std::string file, std::string leaf, std::string msg) {
      rep.problems.push_back(
          {re.dir + (file.empty() ? "" : "/" + file), std::move(leaf), -1, -1, std::move(msg)});
      rep.committed = false;
    };
    // Its COMMIT is the one the sharded index records.
    {
      std::vector<verify_problem> ps;
      detail::fd_guard d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (d.get() < 0) {
        problem("", "",
                errno == ENOENT ? "missing" : "cannot open: " + std::string(std::strerror(errno)));
        continue;
      }
      auto text = detail::read_small(d.get(), std::string(format::commit_file), std::nullopt,
                                     detail::max_commit_file, ps);
      if (text) {
        const std::uint64_t h = format::checksum(std::as_bytes(std::span(*text)));
        if (text->size() != re.commit_bytes || h != re.commit_xxh3) {
          problem("COMMIT", "",
                  "is " + std::to_string(text->size()) + " bytes with checksum " +
                      format::checksum_hex(h) + ", the sharded index records " +
                      std::to_string(re.commit_bytes) + " bytes with " +
                      format::checksum_hex(re.commit_xxh3));
        }
      }
    }
    auto sub = co_await verify_impl(rt, dir, opt);
    if (!sub) {
      problem("", "", sub.error().message());
      continue;
    }
    auto& s = sub.value();
    rep.committed = rep.committed && s.committed;
    rep.files += s.files;
    rep.chunks += s.chunks;
    rep.chunks_checked += s.chunks_checked;
    rep.stored_bytes += s.stored_bytes;
    rep.bytes_read += s.bytes_read;
    for (auto& p : s.problems) {
      p.file = re.dir + "/" + p.file;
      rep.problems.push_back(std::move(p));
    }
    // Every slice this rank holds is a leaf of its index with the slice's dtype and shape.
    auto rcf = detail::read_checkpoint_files(dir);
    if (!rcf || !rcf.value().index) continue;  // (reported by the rank's own verification)
    std::unordered_map<std::string_view, const format::leaf_entry*> by_path;
    for (const auto& le : rcf.value().index->leaves)
      by_path.emplace(le.path, &le);
    for (const auto& gl : six.leaves) {
      for (const auto& sl : gl.slices) {
        if (sl.rank != r) continue;
        auto it = by_path.find(sl.leaf);
        if (it == by_path.end()) {
          problem(std::string(format::index_file), gl.path,
                  "slice " + format::box_to_string(sl.where) + " (leaf \"" + sl.leaf +
                      "\") is missing");
        } else if (it->second->dtype != gl.dtype || it->second->shape != sl.where.extent) {
          problem(std::string(format::index_file), gl.path,
                  "slice " + format::box_to_string(sl.where) + " (leaf \"" + sl.leaf + "\") is " +
                      std::string(dtype_name(it->second->dtype)) +
                      shape_to_string(it->second->shape) + ", expected " +
                      std::string(dtype_name(gl.dtype)) + shape_to_string(sl.where.extent));
        }
      }
    }
  }
  co_return rep;
}

}  // namespace

asio::awaitable<result<verify_report>> verify_checkpoint(std::filesystem::path path,
                                                         verify_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(rt->executor(),
                                    verify_impl(rt, std::move(path), std::move(options)));
}

result<verify_report> verify_checkpoint_blocking(std::filesystem::path path,
                                                 verify_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(), verify_impl(rt, std::move(path), std::move(options)));
}

}  // namespace ckpt
