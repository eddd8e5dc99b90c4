// ckpt-inspect list JOB_DIR: every checkpoint-like directory of a job with its state.
#include "common.hpp"

#include <ckpt/store.hpp>

#include <boost/json/array.hpp>

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <system_error>
#include <utility>

namespace ckpt::inspect {

namespace {

namespace fs = std::filesystem;

struct entry {
  std::string name;
  std::string sort_name;  // the checkpoint name (without '.' and the tmp/trash suffix)
  std::string state;
  bool latest = false;
  std::optional<std::uint64_t> step;
  std::uint64_t disk_bytes = 0;
  std::optional<std::uint64_t> logical, stored, created;
  std::optional<std::uint64_t> ranks;  // a sharded checkpoint: its rank count
  std::optional<std::string> problem;
};

// The files of the whole listing, each inode once: differential checkpoints hard-link their
// bases' data files, so the per-checkpoint sums count those bytes in every checkpoint.
struct inode_tally {
  std::set<std::pair<dev_t, ino_t>> seen;
  std::uint64_t bytes = 0;  // each inode's size once
  bool links = false;       // some file has st_nlink > 1
};

// Sum of the sizes of the regular files below `dir` (apparent sizes: what the files hold);
// each file is also tallied once per inode in `tally`.
std::uint64_t disk_bytes(const fs::path& dir, inode_tally& tally) {
  std::uint64_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    n += size;
    if (st.st_nlink > 1) tally.links = true;
    if (tally.seen.insert({st.st_dev, st.st_ino}).second) tally.bytes += size;
  }
  return n;
}

std::optional<std::uint64_t> step_of(const boost::json::object& metadata) {
  const auto* v = metadata.if_contains("step");
  if (!v) return std::nullopt;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
  return std::nullopt;
}

std::optional<std::string> read_latest(const fs::path& job_dir) {
  std::ifstream in(job_dir / std::string(store::latest_file_name));
  if (!in) return std::nullopt;
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

int list_main(const args& a) {
  expect_positional(a, 1, "list JOB_DIR [--json]");
  const fs::path job_dir = a.positional[0];
  std::error_code ec;
  if (!fs::is_directory(job_dir, ec)) {
    throw tool_error(fs::exists(job_dir, ec) ? job_dir.string() + " is not a directory"
                                             : "no job directory at " + job_dir.string());
  }
  const auto latest = read_latest(job_dir);
  std::vector<entry> entries;
  inode_tally tally;
  for (fs::directory_iterator it(job_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (!it->is_directory(e2) || it->is_symlink(e2)) continue;
    entry e;
    e.name = it->path().filename().string();
    e.sort_name = e.name;
    if (e.name[0] == '.') {
      auto tmp = e.name.find(".tmp-");
      auto trash = e.name.find(".trash-");
      if (tmp != std::string::npos && tmp > 0) {
        e.state = "temporary";
        e.sort_name = e.name.substr(1, tmp - 1);
      } else if (trash != std::string::npos && trash > 0) {
        e.state = "trash";
        e.sort_name = e.name.substr(1, trash - 1);
      } else {
        continue;  // someone else's hidden directory
      }
    }
    e.disk_bytes = disk_bytes(it->path(), tally);
    if (e.state.empty()) {
      auto cf = checkpoint::read_files_blocking(it->path());
      if (!cf) {
        e.state = "corrupt";
        e.problem = cf.error().message();
      } else if (!cf.value().has_commit_file) {
        e.state = "incomplete";
      } else if (!cf.value().committed()) {
        e.state = "corrupt";
        const auto& p = cf.value().problems.front();
        e.problem = p.file + ": " + p.message;
      } else {
        e.state = "committed";
      }
      if (cf && cf.value().commit) {
        const auto& c = *cf.value().commit;
        e.logical = c.logical_bytes;
        e.stored = c.stored_bytes;
        e.created = c.created_unix_ns;
      }
      if (cf && cf.value().sharded_commit) {
        const auto& c = *cf.value().sharded_commit;
        e.logical = c.logical_bytes;
        e.stored = c.stored_bytes;
        e.created = c.created_unix_ns;
        e.ranks = c.ranks;
      }
      if (cf && cf.value().metadata) e.step = step_of(*cf.value().metadata);
      e.latest = latest && *latest == e.name;
    }
    entries.push_back(std::move(e));
  }
  if (ec) throw tool_error("list " + job_dir.string() + ": " + ec.message());
  std::sort(entries.begin(), entries.end(), [](const entry& x, const entry& y) {
    if (x.sort_name != y.sort_name) return store::natural_less(x.sort_name, y.sort_name);
    return x.name < y.name;
  });

  if (a.json) {
    boost::json::array cks;
    for (const auto& e : entries) {
      auto opt = [](const std::optional<std::uint64_t>& v) -> boost::json::value {
        if (v) return *v;
        return nullptr;
      };
      boost::json::object o;
      o["name"] = e.name;
      o["state"] = e.state;
      o["latest"] = e.latest;
      o["step"] = opt(e.step);
      o["disk_bytes"] = e.disk_bytes;
      o["logical_bytes"] = opt(e.logical);
      o["stored_bytes"] = opt(e.stored);
      o["created_unix_ns"] = opt(e.created);
      o["ranks"] = opt(e.ranks);
      if (e.problem) {
        o["problem"] = *e.problem;
      } else {
        o["problem"] = nullptr;
      }
      cks.push_back(std::move(o));
    }
    boost::json::object out;
    out["job_dir"] = job_dir.string();
    if (latest) {
      out["latest"] = *latest;
    } else {
      out["latest"] = nullptr;
    }
    out["checkpoints"] = std::move(cks);
    // Only when hard links exist (differential checkpoints), so that other listings are as
    // before: the files of the whole listing, each inode counted once.
    if (tally.links) out["disk_bytes_once"] = tally.bytes;
    print_json(out);
    return exit_ok;
  }

  std::size_t committed = 0;
  for (const auto& e : entries)
    committed += e.state == "committed";
  std::printf("%s: %zu checkpoint%s committed", job_dir.string().c_str(), committed,
              committed == 1 ? "" : "s");
  if (latest) std::printf(", LATEST %s", latest->c_str());
  std::printf("\n");
  if (entries.empty()) return exit_ok;
  table t({"", "NAME", "STATE", "STEP", "ON DISK", "LOGICAL", "CREATED"},
          {false, false, false, true, true, true, false});
  for (const auto& e : entries) {
    std::string state = e.state == "committed" ? green(e.state)
                        : e.state == "corrupt" ? red(e.state)
                                               : yellow(e.state);
    if (e.ranks) state += dim(" (sharded, " + std::to_string(*e.ranks) + " ranks)");
    t.add({e.latest ? bold("*") : "", e.name, state, e.step ? std::to_string(*e.step) : "-",
           human_bytes(e.disk_bytes), e.logical ? human_bytes(*e.logical) : "-",
           e.created ? human_time(*e.created) : "-"});
  }
  t.print(stdout);
  if (tally.links) {
    std::printf("job total on disk: %s (hard-linked files counted once)\n",
                human_bytes(tally.bytes).c_str());
  }
  for (const auto& e : entries) {
    if (e.problem) std::printf("%s: %s\n", e.name.c_str(), e.problem->c_str());
  }
  if (latest &&
      std::none_of(entries.begin(), entries.end(), [](const entry& e) { return e.latest; })) {
    std::printf("%s\n", red("LATEST names " + *latest + ", which is not here").c_str());
  }
  return exit_ok;
}

}  // namespace ckpt::inspect
