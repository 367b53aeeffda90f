// tidewater.hpp: write tidewater stream processors in C++ (C++23, header only).
//
// A processor is one function called once per event:
//
//   #include "tidewater.hpp"
//
//   tidewater::Result process(const tidewater::Event& event) {
//     auto text = event.value_str();
//     if (!text) return tidewater::invalid("value is a tombstone or empty");
//     return std::vector{tidewater::Output{.value = std::string(*text)}};
//   }
//   TIDEWATER_PROCESSOR(process)
//
// The SDK receives each batch from the host (the tidewater:processor@0.1.0
// WIT world, through wit-bindgen's C++ bindings), calls your function for
// each event in order, and returns one result per event. Events are borrowed
// views valid for the call; outputs are plain std::string values you own.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "processor_cpp.h"

namespace tidewater {

/// Borrowed bytes, valid until the call returns.
using Bytes = std::span<const uint8_t>;

/// Bytes as text (no UTF-8 check).
inline std::string_view as_text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

/// One record read from an input topic (a view of the host's data).
struct Event {
  std::string_view topic;
  uint32_t partition = 0;
  uint64_t offset = 0;
  int64_t timestamp_ms = 0;          ///< ms since the Unix epoch (UTC)
  std::optional<Bytes> key;
  std::optional<Bytes> value;        ///< nullopt is a tombstone, distinct from empty
  std::vector<std::pair<std::string_view, Bytes>> headers;  ///< in order; names may repeat

  /// The value as text; nullopt for a tombstone.
  std::optional<std::string_view> value_str() const {
    if (!value) return std::nullopt;
    return as_text(*value);
  }
};

/// One record to publish.
struct Output {
  std::optional<std::string> value;  ///< nullopt publishes a tombstone
  std::optional<std::string> key;
  std::optional<std::string> topic;  ///< nullopt: the processor's configured output
  std::vector<std::pair<std::string, std::string>> headers;
};

/// Why one event could not be processed.
struct Error {
  enum class Kind { Transient, Invalid, Fatal } kind;
  std::string message;
};

/// An event's outputs, or why not.
using Result = std::expected<std::vector<Output>, Error>;

inline std::unexpected<Error> transient(std::string m) { return std::unexpected(Error{Error::Kind::Transient, std::move(m)}); }
inline std::unexpected<Error> invalid(std::string m) { return std::unexpected(Error{Error::Kind::Invalid, std::move(m)}); }
inline std::unexpected<Error> fatal(std::string m) { return std::unexpected(Error{Error::Kind::Fatal, std::move(m)}); }

/// The processor's config, in order.
using Config = std::vector<std::pair<std::string, std::string>>;
/// What init returns: nothing, or why the config is refused.
using InitResult = std::expected<void, std::string>;

namespace detail {
inline std::span<const uint8_t> span(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline wit::vector<uint8_t> bytes(std::string_view s) { return wit::vector<uint8_t>::from_view(span(s)); }
}  // namespace detail

/// Per-processor state, committed with the batch's outputs and position.
namespace state {
inline std::optional<std::string> get(std::string_view key) {
  auto v = ::tidewater::processor::state::Get(detail::span(key));
  if (!v) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(v->data()), v->size());
}
inline void set(std::string_view key, std::string_view value) {
  ::tidewater::processor::state::Set(detail::span(key), detail::span(value));
}
inline void erase(std::string_view key) { ::tidewater::processor::state::Delete(detail::span(key)); }
}  // namespace state

/// Levelled logging into the host's log (rate-limited by the host).
namespace log {
using L = ::tidewater::processor::log::Level;
inline void debug(std::string_view m) { ::tidewater::processor::log::Log(L::kDebug, m); }
inline void info(std::string_view m) { ::tidewater::processor::log::Log(L::kInfo, m); }
inline void warn(std::string_view m) { ::tidewater::processor::log::Log(L::kWarn, m); }
inline void error(std::string_view m) { ::tidewater::processor::log::Log(L::kError, m); }
}  // namespace log

namespace detail {
using WitEvent = ::tidewater::processor::types::Event;
using WitOutput = ::tidewater::processor::types::Output;
using WitError = ::tidewater::processor::types::ProcessError;
using WitResult = std::expected<wit::vector<WitOutput>, WitError>;

inline Event view(const WitEvent& e) {
  Event ev;
  ev.topic = e.topic.get_view();
  ev.partition = e.partition;
  ev.offset = e.offset;
  ev.timestamp_ms = e.timestamp_ms;
  if (e.key) ev.key = e.key->get_const_view();
  if (e.value) ev.value = e.value->get_const_view();
  for (const auto& h : e.headers.get_const_view())
    ev.headers.emplace_back(std::get<0>(h).get_view(), std::get<1>(h).get_const_view());
  return ev;
}

inline WitOutput lower(const Output& o) {
  auto headers = wit::vector<std::tuple<wit::string, wit::vector<uint8_t>>>::allocate(o.headers.size());
  for (size_t i = 0; i < o.headers.size(); i++)
    headers.initialize(i, std::make_tuple(wit::string::from_view(o.headers[i].first), bytes(o.headers[i].second)));
  WitOutput w{std::nullopt, std::nullopt, std::nullopt, std::move(headers)};
  if (o.topic) w.topic = wit::string::from_view(*o.topic);
  if (o.key) w.key = bytes(*o.key);
  if (o.value) w.value = bytes(*o.value);
  return w;
}

inline WitError lower(const Error& e) {
  auto m = wit::string::from_view(e.message);
  switch (e.kind) {
    case Error::Kind::Transient: return WitError{WitError::Transient{std::move(m)}};
    case Error::Kind::Invalid: return WitError{WitError::Invalid{std::move(m)}};
    default: return WitError{WitError::Fatal{std::move(m)}};
  }
}

template <class F>
wit::vector<WitResult> process_batch(const wit::vector<WitEvent>& events, F&& f) {
  auto out = wit::vector<WitResult>::allocate(events.size());
  for (size_t i = 0; i < events.size(); i++) {
    Result r = f(static_cast<const Event&>(view(events[i])));
    if (r) {
      auto outs = wit::vector<WitOutput>::allocate(r->size());
      for (size_t j = 0; j < r->size(); j++) outs.initialize(j, lower((*r)[j]));
      out.initialize(i, WitResult(std::move(outs)));
    } else {
      out.initialize(i, WitResult(std::unexpect, lower(r.error())));
    }
  }
  return out;
}

template <class F>
std::expected<void, wit::string> init(const wit::vector<std::tuple<wit::string, wit::string>>& config, F&& f) {
  Config c;
  for (const auto& kv : config.get_const_view()) c.emplace_back(std::get<0>(kv).to_string(), std::get<1>(kv).to_string());
  InitResult r = f(static_cast<const Config&>(c));
  if (!r) return std::unexpected(wit::string::from_view(r.error()));
  return {};
}
}  // namespace detail
}  // namespace tidewater

/// Exports `Result fn(const Event&)` as the processor and `InitResult init(const Config&)` as init.
#define TIDEWATER_PROCESSOR_WITH_INIT(fn, init_fn)                                                              \
  std::expected<void, wit::string> exports::processor::Init(                                                   \
      wit::vector<std::tuple<wit::string, wit::string>> config) {                                             \
    return ::tidewater::detail::init(config, init_fn);                                                         \
  }                                                                                                            \
  wit::vector<std::expected<wit::vector<::tidewater::processor::types::Output>,                                \
                            ::tidewater::processor::types::ProcessError>>                                      \
  exports::processor::Process(wit::vector<::tidewater::processor::types::Event> events) {                     \
    return ::tidewater::detail::process_batch(events, fn);                                                     \
  }

/// Exports `Result fn(const Event&)` as the processor; any config is accepted.
#define TIDEWATER_PROCESSOR(fn)                                                                                 \
  static ::tidewater::InitResult tidewater_accept_any_config(const ::tidewater::Config&) { return {}; }        \
  TIDEWATER_PROCESSOR_WITH_INIT(fn, tidewater_accept_any_config)
