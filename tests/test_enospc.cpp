// Real ENOSPC: a small loop-mounted ext4 (mkfs.ext4 -m 0) is filled to many levels of free
// space below what a save needs. Each save must fail cleanly (ENOSPC, no temporary directory
// left) or succeed; the process lives; LATEST keeps loading the previous checkpoint bit-identical;
// after the filler is removed the next save succeeds. Needs root (mount); otherwise it prints why
// and does nothing. Hidden ([.enospc]): tests/reliability.sh runs it.
// Prints: enospc: levels N, lost 0, crashes 0, recovery 100%
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/store.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fs = std::filesystem;

namespace {

ckpt::tree tree_for(std::uint64_t step) {
  auto w = ckpt::array::zeros(ckpt::dtype::f32, {1536 * 1024}).value();  // 6 MiB, incompressible
  auto rb = ckpt::test::random_bytes(w.num_bytes(), 77 + step);
  std::memcpy(w.as_mutable<float>().data(), rb.data(), rb.size());
  return ckpt::tree::dict({{"w", w}});
}

std::uint64_t free_bytes(const fs::path& p) {
  struct statvfs v {};
  if (::statvfs(p.c_str(), &v) != 0) return 0;
  return static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
}

// Leaves about `target` bytes free on the file system of `dir` with one preallocated file.
void fill_to(const fs::path& filler, std::uint64_t target) {
  int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  std::uint64_t f = free_bytes(filler.parent_path());
  std::uint64_t want = f > target ? (f - target) / 4096 * 4096 : 0;
  while (want > 0 && ::fallocate(fd, 0, 0, static_cast<off_t>(want)) != 0)
    want -= std::min<std::uint64_t>(want, 64 << 10);
  ::fsync(fd);
  ::close(fd);
}

bool no_temporaries(const fs::path& job) {
  for (const auto& e : fs::directory_iterator(job)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp-") != std::string::npos) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("saves on a full ext4 fail cleanly and the next save succeeds", "[.enospc]") {
  if (::geteuid() != 0) {
    std::printf("enospc: skipped (not root: cannot mount a loop device)\n");
    return;
  }
  ckpt::test::temp_dir work(fs::temp_directory_path());
  const fs::path img = work / "img", mnt = work / "mnt";
  fs::create_directories(mnt);
  const std::string mk = "truncate -s 64M '" + img.string() + "' && mkfs.ext4 -q -m 0 -F '" +
                         img.string() + "' >/dev/null 2>&1 && mount -o loop '" + img.string() +
                         "' '" + mnt.string() + "'";
  if (std::system(mk.c_str()) != 0) {
    std::printf("enospc: skipped (cannot create or loop-mount an ext4 image)\n");
    return;
  }
  struct unmount {
    fs::path m;
    ~unmount() { (void)std::system(("umount '" + m.string() + "'").c_str()); }
  } guard{mnt};

  const fs::path job = mnt / "job";
  const fs::path filler = mnt / "filler";
  {
    auto first = ckpt::save_blocking(job / "step_0", tree_for(0), {{"step", 0}});
    if (!first) FAIL(first.error().what());
  }
  REQUIRE(ckpt::store::write_latest(job, "step_0"));
  std::uint64_t acked = 0, next = 1;
  int levels = 0, failed = 0, lost = 0, recovered = 0, wrong_error = 0;
  ckpt::store::retention_options keep;
  keep.keep_last = 1;
  const std::uint64_t need = 6ull << 20;
  for (std::uint64_t target = 0; target <= need + (2 << 20); target += 160 << 10) {
    for (bool compress : {true, false}) {
      ++levels;
      fill_to(filler, target);
      ckpt::save_options so;
      so.compress = compress;  // raw saves go through the free-space preflight
      const std::string name = "step_" + std::to_string(next);
      auto r = ckpt::save_blocking(job / name, tree_for(next),
                                   {{"step", static_cast<std::int64_t>(next)}}, so);
      bool registered = false;
      if (r) {
        registered = static_cast<bool>(ckpt::store::write_latest(job, name));
        if (registered) acked = next;
      } else {
        ++failed;
        if (std::getenv("CKPT_ENOSPC_VERBOSE"))
          std::printf("  free %llu: %s\n", static_cast<unsigned long long>(free_bytes(mnt)),
                      r.error().what().c_str());
        if (!(r.error() == std::errc::no_space_on_device)) {
          ++wrong_error;
          UNSCOPED_INFO("unexpected error: " << r.error().what());
        }
        CHECK(no_temporaries(job));
        CHECK_FALSE(fs::exists(job / name));
        // Registering the current checkpoint again on a full disk: fails or succeeds, cleanly.
        (void)ckpt::store::write_latest(job, "step_" + std::to_string(acked));
      }
      // LATEST still loads the acknowledged checkpoint, bit-identical.
      auto latest = ckpt::store::read_latest(job);
      if (!latest || !latest.value()) {
        ++lost;
      } else {
        auto l = ckpt::load_blocking(job / *latest.value());
        if (!l || l.value().metadata.at("step").as_int64() != static_cast<std::int64_t>(acked) ||
            !(l.value().tree == tree_for(acked)))
          ++lost;
      }
      // Space freed: the save (or registration) that failed now succeeds.
      fs::remove(filler);
      if (!r || !registered) {
        if (!r)
          r = ckpt::save_blocking(job / name, tree_for(next),
                                  {{"step", static_cast<std::int64_t>(next)}}, so);
        if (r && ckpt::store::write_latest(job, name)) {
          acked = next;
          if (!registered) ++recovered;
        }
      }
      REQUIRE(acked == next);
      ++next;
      REQUIRE(ckpt::store::apply_retention(job, keep));
    }
  }
  CHECK(lost == 0);
  CHECK(wrong_error == 0);
  CHECK(failed > 0);
  CHECK(recovered == failed);
  std::printf("enospc: levels %d (failed saves %d), lost %d, crashes 0, recovery %d/%d (%.0f%%)\n",
              levels, failed, lost, recovered, failed,
              failed == 0 ? 100.0 : 100.0 * recovered / failed);
  std::fflush(stdout);
}
