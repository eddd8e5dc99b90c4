// Crash-state generator (ALICE-style): a recording backend under the io engine (through which
// every file-system mutation of ckpt goes) logs every mutation of a few rounds of
// save -> register LATEST -> retention. From that log, for every prefix of operations, the
// test builds the file-system states a crash at that point allows:
//   (a) everything up to the crash persisted;
//   (b) only what was made durable: a file's contents as of its last fsync, a directory's
//       entries (create, rename, unlink) as of its last fsync;
//   (c) random subsets of the operations not yet made durable, each one persisted or not;
//   (d) everything persisted but the last write torn (only a prefix of its bytes reached disk).
// Each distinct state is written out to a directory and checked against the ORACLE: LATEST
// names a committed checkpoint at the last acknowledged step or later (acknowledged: save
// committed and register_latest returned), and it loads bit-identical to what was saved.
//
// Model: inodes hold contents or directory entries; every logged op is turned into an op on
// inode numbers by replaying the log on a full model (the log is in completion order, which is
// the order the real file system applied them). Ops of one prefix that are not followed by an
// fsync of their file (data) or of their directory (entries) are the "unsynced" ones.
//
// Self-test: deliberate protocol bugs (CKPT_TEST_PLANT_BUG, compiled into ckpt_testing only)
// must each produce violations.
//
// Size: env CKPT_CRASH_ROUNDS save rounds (default 3) and CKPT_CRASH_SAMPLES random states per
// prefix (default 24); tests/reliability.sh raises both. Prints "crash states: checked N,
// violations 0" and "planted bugs caught: 3/3".
#include "io/backend.hpp"
#include "support.hpp"
#include "testing/testing.hpp"

#include <ckpt/coordinator.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/shard.hpp>
#include <ckpt/store.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_set>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;
using ckpt::io::op_kind;

namespace {

// ---- the log ---------------------------------------------------------------------------------

struct logged_op {
  enum kind_t { mkdir, create, truncate, write, grow, fsync, rename, unlink, hardlink, ack };
  kind_t kind = mkdir;
  std::string path, path2;
  std::uint64_t offset = 0, length = 0;
  std::string data;
  bool exchange = false;
  std::uint64_t step = 0;  // ack
  bool done = false;       // ack of mark_done (not of a step)
  int phase = 0;           // what the scenario was doing (phase_names)
};

// The scenario's phases: crash states are counted by the phase of the prefix's last op.
const char* const phase_names[] = {"save",      "differential save", "LATEST", "retention",
                                   "overwrite", "sharded",           "DONE"};
enum phase_t {
  ph_save,
  ph_diff,
  ph_latest,
  ph_retention,
  ph_overwrite,
  ph_sharded,
  ph_done,
  ph_count
};

class op_log {
 public:
  void add(logged_op op) {
    std::lock_guard l(m_);
    op.phase = phase_;
    if (on_) ops_.push_back(std::move(op));
  }
  void set_phase(int p) {
    std::lock_guard l(m_);
    phase_ = p;
  }
  void start() {
    std::lock_guard l(m_);
    on_ = true;
  }
  void stop() {
    std::lock_guard l(m_);
    on_ = false;
  }
  std::vector<logged_op> take() {
    std::lock_guard l(m_);
    return std::move(ops_);
  }

 private:
  std::mutex m_;
  bool on_ = false;
  int phase_ = 0;
  std::vector<logged_op> ops_;
};

std::string fd_path(int fd) {
  if (fd == AT_FDCWD) return fs::current_path().string();
  char buf[4096];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n < 0) return {};
  return std::string(buf, static_cast<std::size_t>(n));
}

std::string join(int dirfd, const char* path) {
  if (path == nullptr) return {};
  if (path[0] == '/') return fs::path(path).lexically_normal().string();
  return (fs::path(fd_path(dirfd)) / path).lexically_normal().string();
}

// Forwards every op to the real backend and logs the successful mutations, in completion order,
// with the paths resolved when the op was submitted.
class recording_backend final : public ckpt::io::backend {
 public:
  recording_backend(std::unique_ptr<ckpt::io::backend> inner, op_log* log)
      : inner_(std::move(inner)), log_(log) {}
  std::string_view name() const noexcept override { return "recording"; }
  void shutdown() noexcept override { inner_->shutdown(); }
  void submit(ckpt::io::op* o) noexcept override {
    const auto& r = o->req;
    logged_op lo;
    bool keep = true;
    switch (r.kind) {
      case op_kind::mkdir:
        lo.kind = logged_op::mkdir;
        lo.path = join(r.dirfd, r.path);
        break;
      case op_kind::open:
        keep = (r.flags & O_CREAT) != 0 || (r.flags & O_TRUNC) != 0;
        lo.kind = logged_op::create;
        lo.path = join(r.dirfd, r.path);
        lo.exchange = (r.flags & O_TRUNC) != 0;  // (reused: truncate on open)
        break;
      case op_kind::write:
        lo.kind = logged_op::write;
        lo.path = fd_path(r.fd);
        lo.offset = r.offset;
        break;
      case op_kind::fallocate:
        keep = r.flags == 0;  // mode 0 extends the size; KEEP_SIZE would not
        lo.kind = logged_op::grow;
        lo.path = fd_path(r.fd);
        lo.offset = r.offset + r.length;
        break;
      case op_kind::ftruncate:
        lo.kind = logged_op::truncate;
        lo.path = fd_path(r.fd);
        lo.offset = r.length;
        break;
      case op_kind::fsync:
      case op_kind::fdatasync:
        lo.kind = logged_op::fsync;
        lo.path = fd_path(r.fd);
        break;
      case op_kind::rename:
        lo.kind = logged_op::rename;
        lo.path = join(r.dirfd, r.path);
        lo.path2 = join(r.dirfd2, r.path2);
        lo.exchange = (r.flags & RENAME_EXCHANGE) != 0;
        break;
      case op_kind::unlink:
        lo.kind = logged_op::unlink;
        lo.path = join(r.dirfd, r.path);
        break;
      case op_kind::link:
        lo.kind = logged_op::hardlink;
        lo.path = join(r.dirfd, r.path);
        lo.path2 = join(r.dirfd2, r.path2);
        break;
      default:
        keep = false;
    }
    if (!keep) {
      inner_->submit(o);
      return;
    }
    inner_->submit(new wrapper(o, std::move(lo), log_));
  }

 private:
  struct wrapper final : ckpt::io::op {
    wrapper(ckpt::io::op* orig, logged_op lo, op_log* log)
        : op(orig->req), orig_(orig), lo_(std::move(lo)), log_(log) {}
    void complete(int res) noexcept override {
      if (res >= 0) {
        if (lo_.kind == logged_op::write) {
          lo_.data.assign(static_cast<const char*>(req.buffer), static_cast<std::size_t>(res));
        }
        log_->add(std::move(lo_));
      }
      ckpt::io::op* orig = orig_;
      delete this;
      orig->complete(res);
    }
    ckpt::io::op* orig_;
    logged_op lo_;
    op_log* log_;
  };
  std::unique_ptr<ckpt::io::backend> inner_;
  op_log* log_;
};

// ---- the model -------------------------------------------------------------------------------

struct inode {
  bool dir = false;
  std::string data;        // the bytes up to the last one written;
  std::uint64_t size = 0;  // the file's size (>= data.size(); zeros beyond data)
  std::map<std::string, int> entries;
};

// An op on inode numbers.
struct mop {
  enum kind_t { link, unlink, rename, write, resize, grow, fsync, ack } kind = link;
  int dir = -1, dir2 = -1, ino = -1, ino2 = -1;
  std::string name, name2;
  std::uint64_t offset = 0;
  const std::string* data = nullptr;
  std::uint64_t step = 0;
  bool done = false;
  int phase = 0;
  bool exchange = false;
  bool is_entry_op() const { return kind == link || kind == unlink || kind == rename; }
};

struct fs_model {
  std::vector<inode> inodes;  // 0: the root (the test's base directory)

  int lookup(const fs::path& rel) const {
    int cur = 0;
    for (const auto& part : rel) {
      const std::string p = part.string();
      if (p.empty() || p == ".") continue;
      auto it = inodes[static_cast<std::size_t>(cur)].entries.find(p);
      if (it == inodes[static_cast<std::size_t>(cur)].entries.end()) return -1;
      cur = it->second;
    }
    return cur;
  }

  void apply(const mop& m, std::optional<std::uint64_t> torn_bytes = std::nullopt) {
    auto in = [&](int i) -> inode& { return inodes[static_cast<std::size_t>(i)]; };
    switch (m.kind) {
      case mop::link:
        in(m.dir).entries[m.name] = m.ino;
        break;
      case mop::unlink: {
        auto& e = in(m.dir).entries;
        auto it = e.find(m.name);
        if (it != e.end() && it->second == m.ino) e.erase(it);
        break;
      }
      case mop::rename: {
        auto& e1 = in(m.dir).entries;
        auto& e2 = in(m.dir2).entries;
        if (m.exchange) {
          e1[m.name] = m.ino2;
          e2[m.name2] = m.ino;
        } else {
          auto it = e1.find(m.name);
          if (it != e1.end() && it->second == m.ino) e1.erase(it);
          e2[m.name2] = m.ino;
        }
        break;
      }
      case mop::write: {
        auto& d = in(m.ino).data;
        std::uint64_t n = m.data->size();
        if (torn_bytes) n = std::min(n, *torn_bytes);
        if (d.size() < m.offset + n) d.resize(m.offset + n, '\0');
        std::copy_n(m.data->data(), n, d.begin() + static_cast<std::ptrdiff_t>(m.offset));
        in(m.ino).size = std::max<std::uint64_t>(in(m.ino).size, m.offset + n);
        break;
      }
      case mop::resize:
        if (in(m.ino).data.size() > m.offset) in(m.ino).data.resize(m.offset);
        in(m.ino).size = m.offset;
        break;
      case mop::grow:  // fallocate: a size, not bytes (the save preallocates 64 MiB)
        in(m.ino).size = std::max<std::uint64_t>(in(m.ino).size, m.offset);
        break;
      case mop::fsync:
      case mop::ack:
        break;
    }
  }

  // A canonical text of what is reachable from the root (for deduplication).
  void canon(int i, std::string& out) const {
    const inode& n = inodes[static_cast<std::size_t>(i)];
    if (!n.dir) {
      out += "F" + std::to_string(n.size) + "/" + std::to_string(n.data.size()) + ":";
      out += n.data;
      return;
    }
    out += "D{";
    for (const auto& [name, child] : n.entries) {
      out += name + "=";
      canon(child, out);
      out += ";";
    }
    out += "}";
  }

  void write_out(int i, const fs::path& where) const {
    const inode& n = inodes[static_cast<std::size_t>(i)];
    if (!n.dir) {
      {
        std::ofstream f(where, std::ios::binary);
        f.write(n.data.data(), static_cast<std::streamsize>(n.data.size()));
      }
      if (n.size > n.data.size()) fs::resize_file(where, n.size);  // sparse
      return;
    }
    fs::create_directory(where);
    for (const auto& [name, child] : n.entries)
      write_out(child, where / name);
  }
};

fs_model scan(const fs::path& root) {
  fs_model m;
  std::function<int(const fs::path&)> add = [&](const fs::path& p) -> int {
    const int id = static_cast<int>(m.inodes.size());
    m.inodes.emplace_back();
    if (fs::is_directory(p)) {
      m.inodes[static_cast<std::size_t>(id)].dir = true;
      for (const auto& e : fs::directory_iterator(p)) {
        const int child = add(e.path());
        m.inodes[static_cast<std::size_t>(id)].entries[e.path().filename().string()] = child;
      }
    } else {
      std::ifstream f(p, std::ios::binary);
      auto& in = m.inodes[static_cast<std::size_t>(id)];
      in.data.assign(std::istreambuf_iterator<char>(f), {});
      in.size = in.data.size();
    }
    return id;
  };
  add(root);
  return m;
}

// Replays the path log on the full model, producing ops on inode numbers. Every inode the log
// creates gets its number here; `initial` grows to hold them (empty, unreachable).
std::vector<mop> to_inode_ops(const std::vector<logged_op>& log, const fs::path& root,
                              fs_model& initial) {
  fs_model full = initial;
  std::vector<mop> out;
  auto rel = [&](const std::string& p) { return fs::path(p).lexically_relative(root); };
  auto parent_and_name = [&](const std::string& p) {
    fs::path r = rel(p);
    return std::pair{full.lookup(r.parent_path()), r.filename().string()};
  };
  auto new_inode = [&](bool dir) {
    full.inodes.emplace_back();
    full.inodes.back().dir = dir;
    initial.inodes.emplace_back();
    initial.inodes.back().dir = dir;
    return static_cast<int>(full.inodes.size() - 1);
  };
  for (const auto& lo : log) {
    if (lo.kind != logged_op::ack && rel(lo.path).string().rfind("..", 0) == 0) continue;
    mop m;
    switch (lo.kind) {
      case logged_op::mkdir:
      case logged_op::create: {
        auto [d, name] = parent_and_name(lo.path);
        REQUIRE(d >= 0);
        int existing = full.lookup(rel(lo.path));
        if (existing >= 0) {
          if (lo.kind == logged_op::create && lo.exchange) {
            m.kind = mop::resize;
            m.ino = existing;
            m.offset = 0;
            break;
          }
          continue;
        }
        m.kind = mop::link;
        m.dir = d;
        m.name = name;
        m.ino = new_inode(lo.kind == logged_op::mkdir);
        break;
      }
      case logged_op::write:
      case logged_op::truncate:
      case logged_op::grow:
      case logged_op::fsync:
        m.kind = lo.kind == logged_op::write      ? mop::write
                 : lo.kind == logged_op::truncate ? mop::resize
                 : lo.kind == logged_op::grow     ? mop::grow
                                                  : mop::fsync;
        m.ino = full.lookup(rel(lo.path));
        if (m.ino < 0) FAIL("no inode for " << lo.path);
        m.offset = lo.offset;
        m.data = &lo.data;
        break;
      case logged_op::rename: {
        auto [d1, n1] = parent_and_name(lo.path);
        auto [d2, n2] = parent_and_name(lo.path2);
        REQUIRE(d1 >= 0);
        REQUIRE(d2 >= 0);
        m.kind = mop::rename;
        m.dir = d1;
        m.name = n1;
        m.dir2 = d2;
        m.name2 = n2;
        m.ino = full.inodes[static_cast<std::size_t>(d1)].entries.at(n1);
        m.exchange = lo.exchange;
        if (lo.exchange) m.ino2 = full.inodes[static_cast<std::size_t>(d2)].entries.at(n2);
        break;
      }
      case logged_op::hardlink: {
        // A second name for an existing inode (a differential save's link to its base's file).
        auto [d, name] = parent_and_name(lo.path2);
        REQUIRE(d >= 0);
        m.kind = mop::link;
        m.dir = d;
        m.name = name;
        m.ino = full.lookup(rel(lo.path));
        if (m.ino < 0) FAIL("no inode for " << lo.path);
        break;
      }
      case logged_op::unlink: {
        auto [d, name] = parent_and_name(lo.path);
        if (d < 0) continue;
        auto it = full.inodes[static_cast<std::size_t>(d)].entries.find(name);
        if (it == full.inodes[static_cast<std::size_t>(d)].entries.end()) continue;
        m.kind = mop::unlink;
        m.dir = d;
        m.name = name;
        m.ino = it->second;
        break;
      }
      case logged_op::ack:
        m.kind = mop::ack;
        m.step = lo.step;
        m.done = lo.done;
        break;
    }
    m.phase = lo.phase;
    full.apply(m);
    out.push_back(m);
  }
  return out;
}

// ---- the scenario and the oracle -------------------------------------------------------------

tree tree_for(std::uint64_t step) {
  auto w = array::zeros(dtype::f32, {12000}).value();
  auto rb = ckpt::test::random_bytes(w.num_bytes(), 1000 + step);
  std::memcpy(w.as_mutable<float>().data(), rb.data(), rb.size());
  auto b = array::zeros(dtype::i32, {3000}).value();
  auto s = b.as_mutable<std::int32_t>();
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<std::int32_t>((i % 17) + step);
  // The same at every step: what a differential save shares with its base.
  auto frozen = array::zeros(dtype::f32, {4096}).value();
  auto fb = ckpt::test::random_bytes(frozen.num_bytes(), 77);
  std::memcpy(frozen.as_mutable<float>().data(), fb.data(), fb.size());
  return tree::dict({{"w", w}, {"b", b}, {"frozen", frozen}});
}

std::string step_name(std::uint64_t s) {
  return "step_" + std::to_string(s);
}

struct result_holder {
  bool ok = false;
  std::uint64_t shared_bytes = 0;
};

struct recorded_run {
  fs_model initial;
  std::vector<logged_op> log;
  std::vector<mop> ops;
};

// This rank's part of tree_for(step) as a sharded save: "w" split by rows, "b" and "frozen"
// replicated.
std::vector<ckpt::sharded_leaf> sharded_part(const tree& t, int rank, int ranks) {
  const array& w = t.get("w")->leaf();
  const ckpt::slice rows = ckpt::row_slice(w.shape(), rank, ranks);
  const auto floats = w.as<float>().subspan(static_cast<std::size_t>(rows.offset[0]),
                                            static_cast<std::size_t>(rows.extent[0]));
  ckpt::sharded_leaf lw;
  lw.path = "w";
  lw.dtype = w.dtype();
  lw.global_shape = w.shape();
  lw.shards.push_back({rows, array::borrow(floats, rows.extent).value()});
  return {std::move(lw), ckpt::sharded_leaf::replicated_leaf("b", t.get("b")->leaf()),
          ckpt::sharded_leaf::replicated_leaf("frozen", t.get("frozen")->leaf())};
}

// The kinds of commit a scenario covers, each counted in the report.
struct scenario_counts {
  int saves = 0, overwrites = 0, sharded = 0, latest = 0, done = 0, retention = 0;
};

// step_0 committed and LATEST before recording; then `rounds` x (save, register, retention);
// then, with `extras`: an overwrite of the last checkpoint (registered again), a sharded save
// of two ranks (registered), and mark_done. Every op runs on the recording runtime.
recorded_run record_scenario(const fs::path& base, int rounds, bool extras,
                             scenario_counts* counts = nullptr) {
  const fs::path job = base / "job";
  fs::create_directories(job);
  REQUIRE(ckpt::save_blocking(job / step_name(0), tree_for(0), {{"step", 0}}));
  REQUIRE(ckpt::store::write_latest(job, step_name(0)));

  op_log log;
  auto inner = ckpt::io::make_thread_backend({}).value();
  auto engine =
      ckpt::io::make_engine(std::make_unique<recording_backend>(std::move(inner), &log)).value();
  ckpt::runtime_options ro;
  ro.cpu_threads = 2;
  ro.staging_budget = 16 << 20;
  auto rt = ckpt::runtime::create(engine, ro).value();
  scenario_counts n;
  auto ack = [&](std::uint64_t step, bool done = false) {
    logged_op a;
    a.kind = logged_op::ack;
    a.step = step;
    a.done = done;
    log.add(std::move(a));
  };
  auto register_and_retire = [&](const std::string& name, std::uint64_t step) {
    log.set_phase(ph_latest);
    REQUIRE(ckpt::store::write_latest(job, name, rt));
    ++n.latest;
    ack(step);
    log.set_phase(ph_retention);
    ckpt::store::retention_options keep;
    keep.keep_last = 2;
    REQUIRE(ckpt::store::apply_retention(job, keep, rt));
    ++n.retention;
  };

  recorded_run run;
  run.initial = scan(base);
  log.start();
  ckpt::save_options so;
  so.chunk_bytes = 4 << 10;  // many small writes: many unsynced ops to reorder
  so.data_files = 2;
  so.runtime = rt;
  for (int s = 1; s <= rounds; ++s) {
    const auto step = static_cast<std::uint64_t>(s);
    // Even steps are differential (sharing "frozen" with the step before, which retention then
    // retires while they still link its data file), odd steps full.
    ckpt::save_options sso = so;
    if (s % 2 == 0) sso.base = job / step_name(step - 1);
    log.set_phase(s % 2 == 0 ? ph_diff : ph_save);
    auto saved = ckpt::save_blocking(job / step_name(step), tree_for(step),
                                     {{"step", static_cast<std::int64_t>(step)}}, sso);
    REQUIRE(saved);
    ++n.saves;
    register_and_retire(step_name(step), step);
  }
  if (extras) {
    // The latest checkpoint replaced in place (RENAME_EXCHANGE) by the next step's tree.
    const auto last = static_cast<std::uint64_t>(rounds);
    ckpt::save_options over = so;
    over.overwrite = true;
    over.base = job / step_name(last);  // (its own base: linked before the exchange)
    log.set_phase(ph_overwrite);
    REQUIRE(ckpt::save_blocking(job / step_name(last), tree_for(last + 1),
                                {{"step", static_cast<std::int64_t>(last + 1)}}, over));
    ++n.overwrites;
    register_and_retire(step_name(last), last + 1);
    // A sharded checkpoint of two ranks, rank 0 committing it through the same runtime; then a
    // differential one against it (each rank's checkpoint links its part's "frozen" chunks),
    // each registered in turn.
    for (std::uint64_t step : {last + 2, last + 3}) {
      const tree t = tree_for(step);
      log.set_phase(ph_sharded);
      auto group = ckpt::make_local_group(2);
      std::vector<result_holder> outcomes(2);
      std::vector<std::thread> ranks;
      for (int r = 0; r < 2; ++r) {
        ranks.emplace_back([&, r] {
          ckpt::sharded_save_options sso;
          sso.local = so;
          if (step == last + 3) sso.local.base = job / step_name(last + 2);
          auto saved = ckpt::save_sharded_blocking(
              group[static_cast<std::size_t>(r)], job / step_name(step), sharded_part(t, r, 2),
              {{"step", static_cast<std::int64_t>(step)}}, sso);
          auto& out = outcomes[static_cast<std::size_t>(r)];
          out.ok = static_cast<bool>(saved);
          if (saved) out.shared_bytes = saved.value().local.shared_bytes;
        });
      }
      for (auto& th : ranks)
        th.join();
      REQUIRE(outcomes[0].ok);
      REQUIRE(outcomes[1].ok);
      if (step == last + 3) CHECK(outcomes[0].shared_bytes > 0);  // rank 0 holds "frozen"
      ++n.sharded;
      register_and_retire(step_name(step), step);
    }
    log.set_phase(ph_done);
    REQUIRE(ckpt::store::mark_done(job, "done\n", rt));
    ++n.done;
    ack(last + 3, true);
  }
  log.stop();
  so.runtime.reset();
  // Never let a save's coroutine drop the runtime's last reference (on its own thread).
  for (int i = 0; i < 5000 && rt.use_count() > 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  rt.reset();
  run.log = log.take();
  run.ops = to_inode_ops(run.log, base, run.initial);
  if (counts) *counts = n;
  return run;
}

struct check_totals {
  std::uint64_t generated = 0, checked = 0, violations = 0;
  std::uint64_t per_phase[ph_count] = {};
  std::vector<std::string> examples;
};

// Writes the state out under `scratch` and checks the oracle.
void check_state(const fs_model& state, std::uint64_t acked, bool done_acked,
                 const fs::path& scratch, const std::string& what, check_totals& t) {
  ++t.checked;
  fs::remove_all(scratch);
  state.write_out(0, scratch);
  const fs::path job = scratch / "job";
  std::string problem;
  // An ordinary or a sharded checkpoint loads the tree of the step its metadata names (leaf by
  // leaf, since a sharded load nests its leaves in an order of its own).
  auto check_checkpoint = [&](const std::string& name, std::uint64_t& step) -> std::string {
    const fs::path ck = job / name;
    const bool sharded = fs::exists(ck / "sharded-index.json");
    auto loaded = sharded ? ckpt::load_sharded_full_blocking(ck) : ckpt::load_blocking(ck);
    if (!loaded) return name + " does not load: " + loaded.error().message();
    auto it = loaded.value().metadata.find("step");
    step = it == loaded.value().metadata.end() ? 0
                                               : static_cast<std::uint64_t>(it->value().as_int64());
    const tree want = tree_for(step);
    const tree& got = loaded.value().tree;
    const bool same = got.size() == 3u && got.get("w") && got.get("b") && got.get("frozen") &&
                      *got.get("w") == *want.get("w") && *got.get("b") == *want.get("b") &&
                      *got.get("frozen") == *want.get("frozen");
    if (!same) {
      return std::string(sharded ? "sharded " : "") + name + " (step " + std::to_string(step) +
             ") loads different data";
    }
    return {};
  };
  auto latest = ckpt::store::read_latest(job);
  if (!latest) {
    problem = "LATEST unreadable: " + latest.error().message();
  } else if (!latest.value()) {
    problem = "no LATEST";
  } else {
    std::uint64_t step = 0;
    problem = check_checkpoint(*latest.value(), step);
    if (problem.empty() && step < acked) {
      problem =
          "LATEST is step " + std::to_string(step) + " < acknowledged " + std::to_string(acked);
    }
  }
  // Every listed checkpoint loads, whatever retention deleted (differential ones share files).
  if (problem.empty()) {
    auto listed = ckpt::store::list_committed(job);
    if (!listed) problem = "listing fails: " + listed.error().message();
    for (const auto& name : listed ? listed.value() : std::vector<std::string>{}) {
      if (latest && latest.value() && name == *latest.value()) continue;
      std::uint64_t step = 0;
      problem = check_checkpoint(name, step);
      if (!problem.empty()) break;
    }
  }
  if (problem.empty()) {
    // DONE, once acknowledged, is there and whole; before that it is absent or whole.
    std::ifstream f(job / "DONE", std::ios::binary);
    const bool exists = static_cast<bool>(f);
    const std::string text(std::istreambuf_iterator<char>(f), {});
    if (done_acked && !exists) problem = "DONE acknowledged but missing";
    if (exists && text != "done\n") problem = "DONE holds \"" + text + "\"";
  }
  if (!problem.empty()) {
    ++t.violations;
    if (t.examples.size() < 5) t.examples.push_back(what + ": " + problem);
  }
}

check_totals explore(const recorded_run& run, int samples, const fs::path& scratch) {
  check_totals t;
  std::unordered_set<std::size_t> seen;
  std::mt19937_64 rng(7);
  const auto& ops = run.ops;
  const std::size_t n = ops.size();
  std::uint64_t acked = 0;
  bool done_acked = false;
  for (std::size_t p = 0; p <= n; ++p) {
    if (p > 0 && ops[p - 1].kind == mop::ack) {
      acked = ops[p - 1].step;
      done_acked = done_acked || ops[p - 1].done;
    }
    // Which ops of the prefix are durable: a later fsync of their inode (data) or directory.
    std::vector<char> durable(p, 0);
    {
      std::set<int> synced;  // inodes fsynced after the op being looked at
      for (std::size_t i = p; i-- > 0;) {
        const mop& m = ops[i];
        if (m.kind == mop::fsync) {
          synced.insert(m.ino);
          durable[i] = 1;
          continue;
        }
        if (m.kind == mop::ack) {
          durable[i] = 1;
        } else if (m.kind == mop::rename) {
          durable[i] = synced.count(m.dir) && synced.count(m.dir2);
        } else if (m.is_entry_op()) {
          durable[i] = synced.count(m.dir) > 0;
        } else {
          durable[i] = synced.count(m.ino) > 0;
        }
      }
    }
    auto build = [&](auto&& take, std::optional<std::uint64_t> torn_last = std::nullopt) {
      fs_model s = run.initial;
      for (std::size_t i = 0; i < p; ++i) {
        if (!take(i)) continue;
        s.apply(ops[i], i + 1 == p ? torn_last : std::nullopt);
      }
      return s;
    };
    auto consider = [&](const fs_model& s, const std::string& what) {
      ++t.generated;
      std::string c;
      s.canon(0, c);
      if (!seen.insert(std::hash<std::string>{}(c)).second) return;
      if (p > 0) ++t.per_phase[ops[p - 1].phase];
      check_state(s, acked, done_acked, scratch, what, t);
    };
    const std::string at = "prefix " + std::to_string(p) + "/" + std::to_string(n);
    consider(build([](std::size_t) { return true; }), at + " (a) all persisted");
    consider(build([&](std::size_t i) { return durable[i] != 0; }), at + " (b) synced only");
    std::vector<std::size_t> pending;
    for (std::size_t i = 0; i < p; ++i)
      if (!durable[i]) pending.push_back(i);
    if (!pending.empty()) {
      for (int k = 0; k < samples; ++k) {
        std::vector<char> take(p, 1);
        for (auto i : pending)
          take[i] = static_cast<char>(rng() & 1);
        consider(build([&](std::size_t i) { return take[i] != 0; }),
                 at + " (c) random subset " + std::to_string(k));
      }
    }
    if (p > 0 && ops[p - 1].kind == mop::write && ops[p - 1].data->size() > 1) {
      const std::uint64_t len = ops[p - 1].data->size();
      // Torn at every 512-byte sector boundary, and at one random byte.
      std::vector<std::uint64_t> cuts{rng() % len};
      for (std::uint64_t c = 0; c < len; c += 512)
        cuts.push_back(c);
      for (std::uint64_t cut : cuts) {
        consider(build([](std::size_t) { return true; }, cut),
                 at + " (d) torn write at " + std::to_string(cut));
      }
    }
  }
  return t;
}

int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  return e != nullptr ? std::atoi(e) : fallback;
}

fs::path fast_root() {
  return fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
}

}  // namespace

TEST_CASE(
    "every crash state of save, overwrite, sharded commit, LATEST, retention and DONE keeps "
    "the acknowledged checkpoint",
    "[crash]") {
  ckpt::test::temp_dir base(fast_root());
  ckpt::test::temp_dir scratch(fast_root());
  scenario_counts n;
  const auto run = record_scenario(base.path(), env_int("CKPT_CRASH_ROUNDS", 3), true, &n);
  REQUIRE(run.ops.size() > 50);
  const auto t = explore(run, env_int("CKPT_CRASH_SAMPLES", 24), scratch / "state");
  for (const auto& e : t.examples)
    UNSCOPED_INFO(e);
  std::printf("crash states: ops %zu, generated %llu, checked %llu distinct, violations %llu\n",
              run.ops.size(), static_cast<unsigned long long>(t.generated),
              static_cast<unsigned long long>(t.checked),
              static_cast<unsigned long long>(t.violations));
  std::printf(
      "crash-state scenario: %d saves, %d overwrites, %d sharded commits, %d LATEST "
      "writes, %d retention passes, %d DONE\n",
      n.saves, n.overwrites, n.sharded, n.latest, n.retention, n.done);
  std::printf("crash states checked by kind:");
  for (int k = 0; k < ph_count; ++k)
    std::printf(" %s %llu", phase_names[k], static_cast<unsigned long long>(t.per_phase[k]));
  std::printf("\n");
  for (int k = 0; k < ph_count; ++k)
    CHECK(t.per_phase[k] > 0);
  std::fflush(stdout);
  CHECK(t.violations == 0);
}

TEST_CASE("the crash-state generator catches planted protocol bugs", "[crash][plant]") {
  const char* bugs[] = {"skip_dir_fsync", "fsync_before_write", "latest_before_data",
                        "link_after_dir_fsync"};
  int caught = 0;
  for (const char* bug : bugs) {
    ::setenv("CKPT_TEST_PLANT_BUG", bug, 1);
    ckpt::test::temp_dir base(fast_root());
    ckpt::test::temp_dir scratch(fast_root());
    const auto run = record_scenario(base.path(), 2, false);
    ::unsetenv("CKPT_TEST_PLANT_BUG");
    const auto t = explore(run, 4, scratch / "state");
    std::printf("planted bug %s: checked %llu, violations %llu%s%s\n", bug,
                static_cast<unsigned long long>(t.checked),
                static_cast<unsigned long long>(t.violations), t.examples.empty() ? "" : "; e.g. ",
                t.examples.empty() ? "" : t.examples.front().c_str());
    if (t.violations > 0) ++caught;
  }
  std::printf("planted bugs caught: %d/%zu\n", caught, std::size(bugs));
  std::fflush(stdout);
  CHECK(caught == static_cast<int>(std::size(bugs)));
}
