// Saves and loads in the tree's own memory (issue 15): a save whose caller waits for the commit
// writes raw page-aligned chunks straight from the leaves, with unaligned heads, tails, small
// and compressed pieces through staging buffers. Every layout must round-trip bit-exact and
// verify, on tmpfs and on the real disk (O_DIRECT).
#include "support.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/verify.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <memory>

namespace fs = std::filesystem;
using ckpt::array;
using ckpt::dtype;
using ckpt::tree;

namespace {

// Leaves of every shape the direct path distinguishes: page-aligned and not, whole pages and
// not, below and above the direct threshold (64 KiB), one chunk and several, raw and
// compressible, owned, borrowed at odd offsets and shared, with small leaves between them.
struct layout_tree {
  std::shared_ptr<std::vector<std::byte>> backing;  // borrowed and shared leaves live here
  tree t;
};

layout_tree make_layouts() {
  layout_tree lt;
  const std::size_t back = 24u << 20;
  lt.backing = std::make_shared<std::vector<std::byte>>(back + 8192);
  // A page-aligned base inside the vector, so the odd offsets below are odd for certain.
  auto* raw = lt.backing->data();
  auto* base = raw + (4096 - reinterpret_cast<std::uintptr_t>(raw) % 4096) % 4096;
  auto fill = ckpt::test::random_bytes(back, 99);
  std::memcpy(base, fill.data(), back);
  auto borrow_at = [&](std::size_t off, std::int64_t n) {
    return array::borrow(dtype::u8, {n}, std::span<const std::byte>(base + off, std::size_t(n)))
        .value();
  };
  std::shared_ptr<const void> keep = lt.backing;
  auto share_at = [&](std::size_t off, std::int64_t n) {
    return array::share(dtype::u8, {n}, keep,
                        std::span<const std::byte>(base + off, std::size_t(n)))
        .value();
  };
  auto compressible = array::zeros(dtype::f32, {300000}).value();
  auto f = compressible.as_mutable<float>();
  for (std::size_t i = 0; i < f.size(); ++i)
    f[i] = static_cast<float>(i % 7);
  lt.t = tree::dict({
      {"tiny", ckpt::test::random_array(dtype::u8, 3, 1)},
      {"page", ckpt::test::random_array(dtype::u8, 65536, 2)},         // exactly the threshold
      {"below", ckpt::test::random_array(dtype::u8, 65535, 3)},        // just under it
      {"tail", ckpt::test::random_array(dtype::u8, 65536 + 4097, 4)},  // whole pages + a tail
      {"odd_f32", ckpt::test::random_array(dtype::f32, 1000003, 5)},  // 4 MB + 12: a chunk + a tail
      {"tiny2", ckpt::test::random_array(dtype::u8, 17, 6)},
      {"multi",
       ckpt::test::random_array(dtype::f64, 3 * 524288 + 5, 7)},  // three 4 MiB chunks + 40 B
      {"zip", compressible},                                      // LZ4 where a sample pays
      {"b_odd", borrow_at(1, 300001)},                            // odd start: staged
      {"b_page", borrow_at(4096, 200000)},                        // aligned start, odd size
      {"b_3", borrow_at(3 + 8192, 5 << 20)},                      // odd start, several chunks
      {"s_page", share_at(1 << 20, (6 << 20) + 9)},               // shared, aligned, odd size
      {"s_odd", share_at((9 << 20) + 5, 70000)},                  // shared, odd start
      {"empty", array::zeros(dtype::f32, {0}).value()},
  });
  return lt;
}

}  // namespace

TEST_CASE("uncaptured saves write aligned chunks from the leaves' memory; every layout round-trips",
          "[memory]") {
  auto lt = make_layouts();
  for (const auto& root : ckpt::test::test_roots()) {
    for (std::uint64_t chunk : {std::uint64_t(4) << 20, std::uint64_t(256) << 10}) {
      DYNAMIC_SECTION(root.string() << " chunk " << chunk) {
        ckpt::test::temp_dir dir(root);
        ckpt::save_options o;
        o.chunk_bytes = chunk;
        auto s = ckpt::save_blocking(dir / "direct", lt.t, {}, o);
        REQUIRE(s);
        // Most bytes sit in page-aligned raw leaves: they went out without a staging copy.
        CHECK(s.value().direct_bytes > lt.t.num_bytes() / 2);
        CHECK(s.value().direct_bytes <= lt.t.num_bytes());
        CHECK(s.value().capture_s == 0);
        auto l = ckpt::load_blocking(dir / "direct");
        REQUIRE(l);
        CHECK(l.value().tree == lt.t);
        auto v = ckpt::verify_checkpoint_blocking(dir / "direct");
        REQUIRE(v);
        CHECK(v.value().ok());

        // The same tree through start_save: borrowed and owned leaves captured, only the shared
        // ones' aligned chunks written from their memory.
        auto h = ckpt::start_save(dir / "captured", lt.t, {}, o);
        REQUIRE(h.wait_committed());
        const auto hs = h.stats();
        CHECK(hs.capture_s > 0);
        CHECK(hs.direct_bytes > 0);
        CHECK(hs.direct_bytes <= (6u << 20) + 9);  // s_page at most
        auto l2 = ckpt::load_blocking(dir / "captured");
        REQUIRE(l2);
        CHECK(l2.value().tree == lt.t);
      }
    }
  }
}

TEST_CASE("a save without O_DIRECT writes the same layouts", "[memory]") {
  auto lt = make_layouts();
  ckpt::test::temp_dir dir;
  ckpt::save_options o;
  o.direct_io = false;
  auto s = ckpt::save_blocking(dir / "buffered", lt.t, {}, o);
  REQUIRE(s);
  CHECK(s.value().direct_bytes > 0);
  auto l = ckpt::load_blocking(dir / "buffered");
  REQUIRE(l);
  CHECK(l.value().tree == lt.t);
}

namespace {

// A template of `t`'s shapes: owned page-aligned zeros, or (odd) borrowed memory one byte off
// the page, both filled with `sentinel`.
struct template_tree {
  std::vector<std::vector<std::byte>> backing;
  tree t;
};

template_tree template_of(const tree& like, bool odd, std::byte sentinel) {
  template_tree out;
  out.t = tree::dict();
  for (const auto& fl : like.flatten()) {
    const auto& a = fl.array;
    array dest;
    if (odd) {
      auto& mem = out.backing.emplace_back(a.num_bytes() + 4097);
      auto* base = mem.data() + (4096 - reinterpret_cast<std::uintptr_t>(mem.data()) % 4096) % 4096;
      dest = array::borrow(a.dtype(), a.shape(), std::span<std::byte>(base + 1, a.num_bytes()))
                 .value();
    } else {
      dest = array::zeros(a.dtype(), a.shape()).value();
    }
    for (auto& b : dest.mutable_bytes())
      b = sentinel;
    out.t.set(fl.path, dest);  // (flat trees of plain keys: the path is the key)
  }
  return out;
}

bool all_equal(const tree& t, std::byte v) {
  for (const auto& fl : t.flatten()) {
    for (auto b : fl.array.bytes())
      if (b != v) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("loads read aligned raw chunks into the template's memory; every layout round-trips",
          "[memory]") {
  auto lt = make_layouts();
  for (const auto& root : ckpt::test::test_roots()) {
    for (bool streamed : {true, false}) {
      DYNAMIC_SECTION(root.string() << (streamed ? " save_blocking" : " start_save")) {
        ckpt::test::temp_dir dir(root);
        if (streamed) {
          REQUIRE(ckpt::save_blocking(dir / "c", lt.t, {}));
        } else {
          REQUIRE(ckpt::start_save(dir / "c", lt.t, {}).wait_committed());
        }
        for (bool odd : {false, true}) {
          for (bool verify_first : {false, true}) {
            auto tmpl = template_of(lt.t, odd, std::byte{0xab});
            ckpt::load_options lo;
            lo.verify_first = verify_first;
            lo.in_place_only = true;
            auto l = ckpt::load_blocking(dir / "c", &tmpl.t, lo);
            REQUIRE(l);
            CHECK(l.value().tree == lt.t);
            CHECK(tmpl.t == lt.t);  // filled in place
          }
        }
        auto whole = ckpt::load_blocking(dir / "c");  // into fresh arrays
        REQUIRE(whole);
        CHECK(whole.value().tree == lt.t);
      }
    }
  }
}

TEST_CASE(
    "a bit flip in a chunk read into place names the leaf; verify_first leaves the "
    "template untouched",
    "[memory]") {
  for (const auto& root : ckpt::test::test_roots()) {
    DYNAMIC_SECTION(root.string()) {
      ckpt::test::temp_dir dir(root);
      // "a" is one raw 1 MiB chunk at the start of the only data file.
      tree t = tree::dict({{"a", ckpt::test::random_array(dtype::u8, 1 << 20, 11)},
                           {"b", ckpt::test::random_array(dtype::u8, 8192, 12)}});
      ckpt::save_options so;
      so.data_files = 1;
      auto s = ckpt::save_blocking(dir / "c", t, {}, so);
      REQUIRE(s);
      REQUIRE(s.value().direct_bytes == 1u << 20);
      {
        std::fstream f(dir / "c" / "data-00000.bin",
                       std::ios::in | std::ios::out | std::ios::binary);
        REQUIRE(f);
        f.seekg(5000);
        char c = 0;
        f.read(&c, 1);
        c = static_cast<char>(c ^ 0x10);
        f.seekp(5000);
        f.write(&c, 1);
      }
      auto tmpl = template_of(t, false, std::byte{0x5a});
      auto bad = ckpt::load_blocking(dir / "c", &tmpl.t);
      REQUIRE(!bad);
      const std::string m = bad.error().what();
      CHECK(bad.error() == ckpt::errc::corrupt);
      CHECK_THAT(m, Catch::Contains("leaf \"a\" chunk 0") && Catch::Contains("checksum mismatch"));
      // Read into place before its checksum was checked: the error says so and names "a" (and
      // "b" when its chunk was decoded first).
      CHECK_THAT(m,
                 Catch::Contains("was partly or wholly overwritten") && Catch::Contains(": \"a\""));

      auto tmpl2 = template_of(t, false, std::byte{0x5a});
      ckpt::load_options lo;
      lo.verify_first = true;
      auto bad2 = ckpt::load_blocking(dir / "c", &tmpl2.t, lo);
      REQUIRE(!bad2);
      CHECK_THAT(std::string(bad2.error().what()),
                 Catch::Contains("checksum mismatch") &&
                     Catch::Contains("nothing was written into the template's memory"));
      CHECK(all_equal(tmpl2.t, std::byte{0x5a}));
    }
  }
}
