// Write tracking (runtime_options::track_writes): a differential save learns from the kernel
// which chunks of the leaves' memory were written since the last save, and an unchanged chunk
// is neither read nor copied. Every way the memory can change must be seen: a store from a
// thread, an O_DIRECT read into it (a load in place), a memcpy into it (a load through staging),
// pages dropped by madvise, a failed save in between. Each checkpoint must load back to exactly
// the bytes the memory held when it was saved.
#include "support.hpp"

#include "pipeline/write_tracker.hpp"

#include <ckpt/load.hpp>
#include <ckpt/runtime.hpp>
#include <ckpt/save.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

constexpr std::size_t mib = 1 << 20;
constexpr std::size_t elems = 4 * mib / 4;  // 4 MiB of f32: 4 chunks of 1 MiB

struct freer {
  void operator()(float* p) const { std::free(p); }
};

float* pages(std::size_t n) {
  return static_cast<float*>(std::aligned_alloc(4096, (n * sizeof(float) + 4095) / 4096 * 4096));
}

// The memory a training job would own: one leaf page-aligned (a load reads into it with
// O_DIRECT), one one element past a page boundary (a load copies into it), one too small to be
// tracked. (The two large ones own their pages: a page shared with other heap objects counts
// as written whenever they are, which is safe but would blur the counts below.)
struct model {
  std::unique_ptr<float[], freer> aligned{pages(elems)};
  std::unique_ptr<float[], freer> unaligned_pages{pages(elems + 1024)};
  float* unaligned = unaligned_pages.get() + 1;
  std::vector<float> small = std::vector<float>(1000);

  tree state() {
    return tree::dict(
        {{"aligned", array::borrow(std::span(aligned.get(), elems), {std::int64_t(elems)}).value()},
         {"unaligned", array::borrow(std::span(unaligned, elems), {std::int64_t(elems)}).value()},
         {"small", array::borrow(std::span(small), {1000}).value()}});
  }
  void fill(std::uint64_t seed) {
    auto a = ckpt::test::random_bytes(elems * 4, seed);
    std::memcpy(aligned.get(), a.data(), a.size());
    auto b = ckpt::test::random_bytes(elems * 4, seed + 1);
    std::memcpy(unaligned, b.data(), b.size());
    auto c = ckpt::test::random_bytes(4000, seed + 2);
    std::memcpy(small.data(), c.data(), c.size());
  }
};

// Changes one element's bits (random bits as floats are often NaN or huge, where x + 1 == x).
void flip(float& x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  u ^= 0x00010000u;
  std::memcpy(&x, &u, 4);
}

// An owned copy of what the memory holds now.
tree snapshot(model& m) {
  tree out = tree::dict();
  const tree t = m.state();
  for (const auto& fl : t.flatten()) {
    auto a = ckpt::array::zeros(fl.array.dtype(), fl.array.shape()).value();
    std::memcpy(a.mutable_bytes().data(), fl.array.bytes().data(), fl.array.num_bytes());
    out.set(fl.path, tree(std::move(a)));
  }
  return out;
}

}  // namespace

TEST_CASE("a tracking runtime knows unchanged chunks without reading them", "[diff][track]") {
  ckpt::runtime_options ro;
  ro.track_writes = true;
  auto rt = ckpt::runtime::create(ro).value();
  if (!rt->tracks_writes()) {
    WARN("SKIPPED: the kernel cannot track writes (userfaultfd WP_ASYNC + PAGEMAP_SCAN, 6.7+)");
    return;
  }
  for (const auto& root : ckpt::test::test_roots()) {
    INFO(root);
    ckpt::test::temp_dir dir(root);
    model m;
    m.fill(1);
    std::vector<std::pair<fs::path, tree>> saved;  // each checkpoint and what it must load as
    int n = 0;
    fs::path last;
    // One start_save of the borrowed leaves against the previous checkpoint; the caller may
    // change the memory once it is staged.
    auto save = [&]() -> ckpt::save_stats {
      const fs::path p = dir / ("c" + std::to_string(n++));
      ckpt::save_options o;
      o.chunk_bytes = mib;
      o.base = last;
      o.runtime = rt;
      tree expect = snapshot(m);
      auto h = ckpt::start_save(p, m.state(), {}, o);
      REQUIRE(h.wait_committed());
      saved.emplace_back(p, std::move(expect));
      last = p;
      return h.stats();
    };
    const std::uint64_t tracked = 2 * elems * 4;

    auto s0 = save();  // the first look registers the memory: every chunk is read
    CHECK(s0.untouched_bytes == 0);
    auto s1 = save();  // nothing written since: every tracked chunk known, none read
    CHECK(s1.shared_bytes == tracked + 4000);
    CHECK(s1.untouched_bytes == tracked);

    SECTION("stores from a thread") {
      flip(m.aligned[2 * mib / 4 + 5]);                   // chunk 2 of "aligned"
      std::thread([&] { flip(m.unaligned[7]); }).join();  // chunk 0 of "unaligned"
      flip(m.small[3]);                                   // (hashed, never tracked)
      auto s = save();
      CHECK(s.shared_bytes == tracked - 2 * mib);  // ("small" changed too)
      CHECK(s.untouched_bytes == tracked - 2 * mib);
      auto again = save();
      CHECK(again.untouched_bytes == tracked);
    }
    SECTION("a load in place (O_DIRECT into the aligned leaf, copies into the other)") {
      model other;
      other.fill(99);
      const fs::path x = dir / "other";
      REQUIRE(ckpt::save_blocking(x, other.state(), {}));
      const tree templ = m.state();
      REQUIRE(ckpt::load_blocking(x, &templ));
      auto s = save();
      CHECK(s.untouched_bytes == 0);
      CHECK(s.shared_bytes == 0);
    }
    SECTION("a read(2) into the memory") {
      const auto bytes = ckpt::test::random_bytes(mib, 7);
      {
        std::ofstream f(dir / "raw.bin", std::ios::binary);
        f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
      }
      const int fd = ::open((dir / "raw.bin").c_str(), O_RDONLY | O_CLOEXEC);
      REQUIRE(fd >= 0);
      CHECK(::pread(fd, m.aligned.get() + mib / 4, mib, 0) == std::int64_t(mib));  // chunk 1
      ::close(fd);
      auto s = save();
      CHECK(s.untouched_bytes == tracked - mib);
    }
    SECTION("pages dropped by madvise read as zeros") {
      REQUIRE(::madvise(m.aligned.get() + mib / 4, 64 * 1024, MADV_DONTNEED) == 0);
      CHECK(m.aligned[mib / 4] == 0.0f);
      auto s = save();
      CHECK(s.untouched_bytes == tracked - mib);
    }
    SECTION("a failed save between two saves") {
      ckpt::save_options o;
      o.chunk_bytes = mib;
      o.base = last;
      o.runtime = rt;
      { std::ofstream blocker(dir / "file"); }
      auto h = ckpt::start_save(dir / "file" / "c", m.state(), {}, o);  // (a file's "child")
      CHECK_FALSE(h.wait_committed());
      flip(m.aligned[3 * mib / 4]);  // chunk 3
      auto s = save();
      CHECK(s.untouched_bytes == tracked - mib);
    }
    for (const auto& [p, expect] : saved) {
      INFO(p);
      auto l = ckpt::load_blocking(p);
      REQUIRE(l);
      CHECK(l.value().tree == expect);
    }
  }
}

TEST_CASE("write tracker: what a look forgets, and a stale hash is not remembered", "[track]") {
  auto wt = ckpt::detail::write_tracker::create();
  if (!wt) {
    WARN("SKIPPED: the kernel cannot track writes (userfaultfd WP_ASYNC + PAGEMAP_SCAN, 6.7+)");
    return;
  }
  constexpr std::size_t n = 4 * mib;
  void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  auto* p = static_cast<std::byte*>(m);
  std::memset(p, 1, n);
  const std::span<const std::byte> all(p, n);
  const ckpt::format::raw_hash h1{1, 2}, h2{3, 4};

  REQUIRE(wt->look(all));  // registers: nothing known
  CHECK_FALSE(wt->known(p, mib));
  wt->remember(p, mib, h1, wt->epoch());
  wt->remember(p + mib, mib, h2, wt->epoch());
  CHECK(wt->known(p, mib) == h1);
  CHECK_FALSE(wt->known(p, mib + 1));  // (exactly the range remembered)

  const auto before = wt->epoch();
  p[100] = std::byte{2};  // a page of the first range
  REQUIRE(wt->look(all));
  CHECK_FALSE(wt->known(p, mib));
  CHECK(wt->known(p + mib, mib) == h2);  // untouched

  // A hash of the bytes an earlier look saw (a staging copy hashed after `staged`) comes too late.
  wt->remember(p, mib, h1, before);
  CHECK_FALSE(wt->known(p, mib));

  // A mapping replaced at the same address is not the memory that was looked at.
  REQUIRE(::mmap(p + mib, mib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                 0) == p + mib);
  REQUIRE(wt->look(all));
  CHECK_FALSE(wt->known(p + mib, mib));
  wt->remember(p + 2 * mib, mib, h2, wt->epoch());
  REQUIRE(wt->look(all));
  CHECK(wt->known(p + 2 * mib, mib) == h2);
  ::munmap(m, n);
}
