#include <ckpt/tree.hpp>

#include <catch2/catch.hpp>

using ckpt::tree;

namespace {
ckpt::array leaf_of(std::vector<float>& v) {
  return ckpt::array::borrow(std::span<float>(v), {static_cast<std::int64_t>(v.size())}).value();
}
}  // namespace

TEST_CASE("flatten yields leaves depth-first in insertion order", "[tree]") {
  std::vector<float> a(2, 1), b(3, 2), c(1, 3), d(4, 4);
  tree t = tree::dict({{"z", leaf_of(a)},
                       {"a", tree::dict({{"w", leaf_of(b)}, {"none", tree()}})},
                       {"l", tree::list({leaf_of(c), tree(), leaf_of(d)})}});
  auto flat = t.flatten();
  REQUIRE(flat.size() == 4);
  CHECK(flat[0].path == "z");
  CHECK(flat[1].path == "a/w");
  CHECK(flat[2].path == "l/0");
  CHECK(flat[3].path == "l/2");
  CHECK(t.num_leaves() == 4);
  CHECK(t.num_bytes() == (2 + 3 + 1 + 4) * 4);
  REQUIRE(t.find("a/w"));
  CHECK(t.find("a/w")->leaf().num_elements() == 3);
  CHECK(t.find("a/none")->is_none());
  CHECK(t.find("l/2")->leaf().num_elements() == 4);
  CHECK(t.find("l/3") == nullptr);
  CHECK(t.find("l/01") == nullptr);
  CHECK(t.find("missing") == nullptr);
  auto err = t.at("a/q");
  REQUIRE_FALSE(err);
  CHECK(err.error() == ckpt::errc::not_found);
  CHECK(err.error().message().find("\"q\" under \"a\"") != std::string::npos);
}

TEST_CASE("unflatten rebuilds the same tree", "[tree]") {
  std::vector<float> a(2, 1), b(3, 2);
  tree t = tree::dict({{"x", tree::list({leaf_of(a), tree::dict()})}, {"y", leaf_of(b)}});
  std::vector<ckpt::array> leaves;
  for (auto& f : t.flatten())
    leaves.push_back(f.array);
  auto back = ckpt::unflatten(t, leaves);
  REQUIRE(back);
  CHECK(back.value() == t);
  CHECK(back.value().same_structure(t));
  leaves.pop_back();
  CHECK_FALSE(ckpt::unflatten(t, leaves));
}

TEST_CASE("keys with '/' and '~' escape reversibly", "[tree]") {
  CHECK(ckpt::escape_key("a/b~c") == "a~1b~0c");
  CHECK(ckpt::unescape_key("a~1b~0c").value() == "a/b~c");
  CHECK_FALSE(ckpt::unescape_key("bad~2"));
  CHECK_FALSE(ckpt::unescape_key("bad~"));
  std::vector<float> v(1, 5);
  tree t = tree::dict({{"a/b", tree::dict({{"~x", leaf_of(v)}})}, {"ünï/cødé", leaf_of(v)}});
  auto flat = t.flatten();
  CHECK(flat[0].path == "a~1b/~0x");
  CHECK(flat[1].path == "ünï~1cødé");
  REQUIRE(t.find("a~1b/~0x"));
  CHECK(t.find("ünï~1cødé")->is_leaf());
  auto parts = ckpt::split_path("a~1b/~0x").value();
  REQUIRE(parts.size() == 2);
  CHECK(parts[0] == "a/b");
  CHECK(parts[1] == "~x");
}

TEST_CASE("empty trees, empty containers and a bare leaf", "[tree]") {
  CHECK(tree().flatten().empty());
  CHECK(tree::dict().flatten().empty());
  CHECK(tree::list().size() == 0);
  CHECK(tree() == tree());
  CHECK_FALSE(tree::dict() == tree::list());
  std::vector<float> v(3, 1);
  tree leaf = leaf_of(v);
  auto flat = leaf.flatten();
  REQUIRE(flat.size() == 1);
  CHECK(flat[0].path.empty());
  CHECK(leaf.find("") == &leaf);
}

TEST_CASE("deep nesting and wide dicts", "[tree]") {
  std::vector<float> v(1, 1);
  tree t = leaf_of(v);
  for (int i = 0; i < 500; ++i)
    t = tree::dict({{"k", std::move(t)}});
  auto flat = t.flatten();
  REQUIRE(flat.size() == 1);
  CHECK(flat[0].path.size() == 500 * 2 - 1);

  tree wide = tree::dict();
  for (int i = 0; i < 20000; ++i)
    wide.set("t_" + std::to_string(i), leaf_of(v));
  CHECK(wide.size() == 20000);
  CHECK(wide.get("t_19999") != nullptr);
  wide.set("t_5", tree());  // replace keeps the position
  CHECK(wide.items()[5].second.is_none());
  CHECK(wide.size() == 20000);
}

TEST_CASE("tree misuse is a programming error", "[tree]") {
  CHECK_THROWS_AS(tree().leaf(), std::logic_error);
  CHECK_THROWS_AS(tree::list().set("a", tree()), std::logic_error);
  CHECK_THROWS_AS(tree::dict().append(tree()), std::logic_error);
  CHECK_THROWS_AS(tree::dict({{"a", tree()}, {"a", tree()}}), std::invalid_argument);
}

TEST_CASE("structural vs value equality", "[tree]") {
  std::vector<float> a(2, 1), b(2, 9);
  tree x = tree::dict({{"w", leaf_of(a)}});
  tree y = tree::dict({{"w", leaf_of(b)}});
  CHECK(x.same_structure(y));
  CHECK_FALSE(x == y);
  tree copy = x;
  CHECK(copy == x);
  copy.set("extra", tree());
  CHECK_FALSE(copy.same_structure(x));
}

TEST_CASE("dict and list builders have a moving form for deep trees", "[tree]") {
  // Deep nesting: with the initializer-list form every level copies the subtree below it
  // (quadratic: a 20,000-deep chain took 24 s); the moving form does not.
  ckpt::tree chain(ckpt::array::zeros(ckpt::dtype::f32, {1}).value());
  ckpt::tree by_set = chain;
  for (int i = 0; i < 2000; ++i) {
    std::vector<ckpt::tree::item> items;
    items.emplace_back("d", std::move(chain));
    chain = ckpt::tree::dict(std::move(items));
    ckpt::tree d = ckpt::tree::dict();
    d.set("d", std::move(by_set));
    by_set = std::move(d);
  }
  CHECK(chain == by_set);
  std::vector<ckpt::tree> elems;
  elems.emplace_back(ckpt::tree());
  elems.emplace_back(std::move(chain));
  auto l = ckpt::tree::list(std::move(elems));
  CHECK(l.elements().size() == 2);
  std::vector<ckpt::tree::item> dup;
  dup.emplace_back("k", ckpt::tree());
  dup.emplace_back("k", ckpt::tree());
  CHECK_THROWS_AS(ckpt::tree::dict(std::move(dup)), std::invalid_argument);
}
