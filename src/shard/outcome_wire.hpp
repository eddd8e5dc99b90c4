// Errors across processes (internal): a ckpt::error as JSON and back, for the messages of
// `agree` and of the sharded save protocol. The code travels as its category's name and value:
// ckpt, system and generic codes come back as themselves, any other as errc::aborted.
#pragma once

#include <ckpt/error.hpp>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <string_view>

namespace ckpt::detail {

/// {"category": "...", "value": N, "message": "..."}
boost::json::object error_to_json(const error& e);
/// The error `v` describes, its message prefixed by `prefix` (e.g. "rank 2: "); a malformed `v`
/// is errc::collective_failed.
error error_from_json(const boost::json::value& v, std::string_view prefix);

}  // namespace ckpt::detail
