// The consumer's own separately compiled Asio (CONSUMER_ASIO=separate): libckpt defines none of
// Asio's symbols, so this links without duplicates.
#include <boost/asio/impl/src.hpp>
