// uart_bridge.cpp - run a Verilated gw_board and bridge its UART to stdin / stdout.
//
// Bytes read from stdin are sent bit by bit (8N1) on the board's uart_rx pin; bytes the board
// sends on uart_tx are decoded at mid-bit and written to stdout at once. stdin and stdout are
// binary and unbuffered. The simulation clocks all the time, so the board's timeouts behave as on
// hardware; when nothing moves it sleeps in poll() between chunks of cycles to spare the CPU.
//
// Build (the Verilated model must be named Vgw_board, the default for --top-module gw_board):
//   verilator --cc --exe --build -O2 --top-module gw_board -GCLKS_PER_BIT=4 ... \
//       gw_uart.v gw_core.v uart_bridge.cpp -CFLAGS -DGW_CLKS_PER_BIT=4
// Run:
//   ./Vgw_board [--clks-per-bit N] [--drain-cycles N] [--max-cycles N]
//   --clks-per-bit  must equal the gw_board parameter CLKS_PER_BIT (default: GW_CLKS_PER_BIT)
//   --drain-cycles  after stdin closes and every byte is sent, exit once the board has been quiet
//                   this many cycles (default 200000)
//   --max-cycles    stop after this many cycles, 0 = never (default 0)
// A host should write whole request frames in one write(): the board drops a frame that stalls
// mid-way for TIMEOUT_BYTES byte-times of simulated time.
// Exit status: 0 after stdin closed and the board went quiet, 2 on bad arguments, 3 if stdout closed.

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "Vgw_board.h"
#include "verilated.h"

#ifndef GW_CLKS_PER_BIT
#define GW_CLKS_PER_BIT 104
#endif

namespace {

const uint64_t kIdleChunk = 20000;  // cycles simulated between sleeping polls while idle

bool write_all(int fd, const uint8_t* data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 100);
                continue;
            }
            return false;
        }
        data += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

uint64_t parse_count(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        std::fprintf(stderr, "uart_bridge: %s needs a whole number, got '%s'\n", flag, text);
        std::exit(2);
    }
    return static_cast<uint64_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t clks_per_bit = GW_CLKS_PER_BIT;
    uint64_t drain_cycles = 200000;
    uint64_t max_cycles = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 < argc && a == "--clks-per-bit") {
            clks_per_bit = parse_count("--clks-per-bit", argv[++i]);
        } else if (i + 1 < argc && a == "--drain-cycles") {
            drain_cycles = parse_count("--drain-cycles", argv[++i]);
        } else if (i + 1 < argc && a == "--max-cycles") {
            max_cycles = parse_count("--max-cycles", argv[++i]);
        } else if (a.rfind("+verilator", 0) == 0) {
            // Verilator runtime options, handled by commandArgs
        } else {
            std::fprintf(stderr,
                         "uart_bridge: unknown argument '%s'\n"
                         "usage: %s [--clks-per-bit N] [--drain-cycles N] [--max-cycles N]\n",
                         a.c_str(), argv[0]);
            return 2;
        }
    }
    if (clks_per_bit < 4) {
        std::fprintf(stderr, "uart_bridge: --clks-per-bit must be at least 4, got %llu\n",
                     static_cast<unsigned long long>(clks_per_bit));
        return 2;
    }

    std::signal(SIGPIPE, SIG_IGN);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vgw_board>(ctx.get());
    top->clk = 0;
    top->uart_rx = 1;
    top->eval();

    std::deque<uint8_t> pending;   // stdin bytes not yet on the wire
    bool stdin_open = true;

    // host -> board transmitter
    uint16_t tx_shift = 0;         // {stop, data, start}, LSB first
    int tx_bits = 0;               // bits left in tx_shift
    uint64_t tx_cnt = 0;           // clocks left in the current bit

    // board -> host receiver (mid-bit sampling)
    bool rx_busy = false;
    int rx_bitn = 0;
    uint64_t rx_cnt = 0;
    uint8_t rx_byte = 0;

    uint64_t cycle = 0;
    const uint64_t startup_cycles = 20 * clks_per_bit + 64;  // the line idles high past power-on reset
    uint64_t quiet = 0;            // cycles with nothing to send, nothing received, both lines idle
    uint8_t inbuf[4096];

    while (max_cycles == 0 || cycle < max_cycles) {
        // read stdin: without waiting while busy; while quiet, sleep up to 1 ms every kIdleChunk cycles
        const bool sleepy = quiet >= kIdleChunk && quiet % kIdleChunk == 0;
        if (stdin_open && (cycle % 256 == 0 || sleepy)) {
            if (sleepy) {
                struct pollfd p = {0, POLLIN, 0};
                poll(&p, 1, 1);
            }
            ssize_t n = read(0, inbuf, sizeof(inbuf));
            if (n > 0) {
                pending.insert(pending.end(), inbuf, inbuf + n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                stdin_open = false;
            }
        }

        // drive uart_rx
        if (tx_bits == 0 && !pending.empty() && cycle >= startup_cycles) {
            tx_shift = static_cast<uint16_t>(0x200 | (pending.front() << 1));
            pending.pop_front();
            tx_bits = 10;
            tx_cnt = clks_per_bit;
        }
        top->uart_rx = tx_bits > 0 ? (tx_shift & 1) : 1;

        // one clock
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycle;

        if (tx_bits > 0 && --tx_cnt == 0) {
            tx_shift >>= 1;
            --tx_bits;
            tx_cnt = clks_per_bit;
        }

        // sample uart_tx
        const int line = top->uart_tx & 1;
        if (!rx_busy) {
            if (line == 0) {
                rx_busy = true;
                rx_bitn = 0;
                rx_cnt = clks_per_bit / 2;
            }
        } else if (--rx_cnt == 0) {
            rx_cnt = clks_per_bit;
            if (rx_bitn == 0) {
                if (line) rx_busy = false;  // glitch
            } else if (rx_bitn <= 8) {
                rx_byte = static_cast<uint8_t>((rx_byte >> 1) | (line << 7));
            } else {
                rx_busy = false;
                if (line) {
                    if (!write_all(1, &rx_byte, 1)) return 3;
                } else {
                    std::fprintf(stderr, "uart_bridge: framing error (low stop bit) at cycle %llu\n",
                                 static_cast<unsigned long long>(cycle));
                }
            }
            ++rx_bitn;
        }

        const bool idle = pending.empty() && tx_bits == 0 && !rx_busy && line == 1;
        quiet = idle ? quiet + 1 : 0;
        if (!stdin_open && quiet >= drain_cycles) break;
    }
    top->final();
    return 0;
}
