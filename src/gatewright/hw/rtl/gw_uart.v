// gw_uart.v - UART board wrapper for a gatewright core (gw_core).
//
// gw_uart_rx / gw_uart_tx: 8N1 UART, one bit = CLKS_PER_BIT clocks (CLKS_PER_BIT >= 4).
// gw_board: top module for a real board. It carries input and output vectors of gw_core over the
// UART with the framing protocol of docs/framing.md (version 1), in short:
//   request  : A5 cmd payload            cmd 01 = IDENT (no payload), 02 = INFER (N_IN values)
//   response : 5A cmd status payload     status 00 = OK, 01 = unknown command (no payload)
//   a value  : ceil(bits/8) bytes, little endian, two's complement sign-extended to whole bytes
//   IDENT OK : version(1) DESIGN_ID(4) N_IN(2) IN_BITS(1) N_OUT(2) OUT_BITS(1), multi-byte fields LE
// A request that stalls for TIMEOUT_BYTES byte-times mid-frame is dropped without a response.
// Flow control: the host sends request k+1 only after it has received the first byte of response k.
// gw_core must hold out_data stable while out_valid is high and out_ready low (the wrapper reads the
// output straight from the core while it sends the response, with no copy).
// Verilog-2005; synthesizes with yosys synth_ecp5 / synth_ice40; lints clean with verilator -Wall.

`default_nettype none
/* verilator lint_off DECLFILENAME */

module gw_uart_rx #(
  parameter CLKS_PER_BIT = 104
) (
  input  wire       clk,
  input  wire       rst,
  input  wire       rx,
  output reg  [7:0] data,
  output reg        valid   // one-cycle pulse; data holds the byte until the next byte's first data bit
);
  localparam CW = $clog2(CLKS_PER_BIT);
  localparam integer FULL_I = CLKS_PER_BIT - 1;
  localparam integer HALF_I = (CLKS_PER_BIT - 1) / 2;
  localparam [CW-1:0] FULL = FULL_I[CW-1:0];
  localparam [CW-1:0] HALF = HALF_I[CW-1:0];

  reg          sync1;
  reg          sync2;
  reg          busy;
  reg [3:0]    bitn;     // 0 start, 1..8 data (LSB first), 9 stop
  reg [CW-1:0] cnt;

  initial begin
    data = 8'd0;
    valid = 1'b0;
  end

  always @(posedge clk) begin
    sync1 <= rx;
    sync2 <= sync1;
    valid <= 1'b0;
    if (rst) begin
      busy <= 1'b0;
    end else if (!busy) begin
      if (!sync2) begin               // falling edge of a start bit: sample it again at mid-bit
        busy <= 1'b1;
        cnt  <= HALF;
        bitn <= 4'd0;
      end
    end else if (cnt != {CW{1'b0}}) begin
      cnt <= cnt - 1'b1;
    end else begin
      cnt  <= FULL;
      bitn <= bitn + 4'd1;
      if (bitn == 4'd0) begin
        if (sync2) busy <= 1'b0;      // glitch, not a start bit
      end else if (bitn == 4'd9) begin
        busy  <= 1'b0;
        valid <= sync2;               // a low stop bit is a framing error: the byte is dropped
      end else begin
        data <= {sync2, data[7:1]};
      end
    end
  end
endmodule

module gw_uart_tx #(
  parameter CLKS_PER_BIT = 104
) (
  input  wire       clk,
  input  wire       rst,
  input  wire [7:0] data,
  input  wire       valid,
  output wire       ready,          // a byte is taken on a rising edge where valid && ready
  output wire       tx
);
  localparam CW = $clog2(CLKS_PER_BIT);
  localparam integer FULL_I = CLKS_PER_BIT - 1;
  localparam [CW-1:0] FULL = FULL_I[CW-1:0];

  reg [9:0]    shreg;    // {stop, data, start}, sent LSB first
  reg [3:0]    left;     // bits still to send
  reg [CW-1:0] cnt;

  assign ready = (left == 4'd0);
  assign tx    = shreg[0];

  always @(posedge clk) begin
    if (rst) begin
      shreg <= 10'h3ff;
      left  <= 4'd0;
    end else if (left == 4'd0) begin
      if (valid) begin
        shreg <= {1'b1, data, 1'b0};
        left  <= 4'd10;
        cnt   <= {CW{1'b0}};
      end
    end else if (cnt == FULL) begin
      cnt   <= {CW{1'b0}};
      shreg <= {1'b1, shreg[9:1]};
      left  <= left - 4'd1;
    end else begin
      cnt <= cnt + 1'b1;
    end
  end
endmodule

module gw_board #(
  parameter N_IN          = 1,
  parameter IN_BITS       = 8,
  parameter N_OUT         = 1,
  parameter OUT_BITS      = 8,
  parameter CLKS_PER_BIT  = 104,        // baud = f_clk / CLKS_PER_BIT
  parameter [31:0] DESIGN_ID = 32'h0,
  parameter TIMEOUT_BYTES = 64          // a request silent this many byte-times mid-frame is dropped
) (
  input  wire clk,
  input  wire uart_rx,
  output wire uart_tx
);
  localparam IN_BYTES  = (IN_BITS + 7) / 8;
  localparam OUT_BYTES = (OUT_BITS + 7) / 8;
  localparam IDENT_LEN = 11;
  localparam RSP_LEN   = (3 + N_OUT * OUT_BYTES > 3 + IDENT_LEN) ? 3 + N_OUT * OUT_BYTES : 3 + IDENT_LEN;
  localparam TIMEOUT_CLKS = TIMEOUT_BYTES * 10 * CLKS_PER_BIT;

  localparam IBW = (IN_BYTES > 1)  ? $clog2(IN_BYTES)  : 1;
  localparam NIW = (N_IN > 1)      ? $clog2(N_IN)      : 1;
  localparam PW  = $clog2(RSP_LEN);
  localparam TW  = $clog2(TIMEOUT_CLKS);

  localparam integer IB_LAST_I = IN_BYTES - 1;
  localparam integer NI_LAST_I = N_IN - 1;
  localparam integer POS_INFER_LAST_I = 3 + N_OUT * OUT_BYTES - 1;
  localparam integer POS_IDENT_LAST_I = 3 + IDENT_LEN - 1;
  localparam integer T_LAST_I = TIMEOUT_CLKS - 1;
  localparam integer N_IN_I = N_IN, IN_BITS_I = IN_BITS, N_OUT_I = N_OUT, OUT_BITS_I = OUT_BITS;
  localparam [IBW-1:0] IB_LAST = IB_LAST_I[IBW-1:0];
  localparam [NIW-1:0] NI_LAST = NI_LAST_I[NIW-1:0];
  localparam [PW-1:0]  POS_INFER_LAST = POS_INFER_LAST_I[PW-1:0];
  localparam [PW-1:0]  POS_IDENT_LAST = POS_IDENT_LAST_I[PW-1:0];
  localparam [PW-1:0]  POS_ERROR_LAST = 2;
  localparam [TW-1:0]  T_LAST = T_LAST_I[TW-1:0];
  localparam [15:0]    N_IN_W = N_IN_I[15:0];
  localparam [7:0]     IN_BITS_W = IN_BITS_I[7:0];
  localparam [15:0]    N_OUT_W = N_OUT_I[15:0];
  localparam [7:0]     OUT_BITS_W = OUT_BITS_I[7:0];

  localparam [7:0] REQ_SYNC = 8'hA5, RSP_SYNC = 8'h5A;
  localparam [7:0] CMD_IDENT = 8'h01, CMD_INFER = 8'h02;
  localparam [7:0] ST_OK = 8'h00, ST_UNKNOWN_CMD = 8'h01;
  localparam [7:0] VERSION = 8'h01;

  // ---- power-on reset: rst is high for the first 8 clocks after configuration ----
  reg  [3:0] por;
  wire       rst = ~por[3];
  initial por = 4'd0;                   // FPGA configuration sets the initial value
  always @(posedge clk) if (!por[3]) por <= por + 4'd1;

  // ---- UART ----
  wire [7:0] rx_data;
  wire       rx_valid;
  wire [7:0] tx_data;
  wire       tx_ready;
  reg        tx_busy;  // a response is being handed to the transmitter

  gw_uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_rx (
    .clk(clk), .rst(rst), .rx(uart_rx), .data(rx_data), .valid(rx_valid));
  gw_uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_tx (
    .clk(clk), .rst(rst), .data(tx_data), .valid(tx_busy), .ready(tx_ready), .tx(uart_tx));

  // ---- the core ----
  wire                          in_ready;
  wire                          out_valid;
  wire                          out_ready;
  wire [N_OUT*OUT_BITS-1:0]     out_data;
  reg  [N_IN*IN_BITS-1:0]       in_buf;
  reg  [2:0]                    pst;
  localparam [2:0] P_IDLE = 3'd0, P_CMD = 3'd1, P_PAYLOAD = 3'd2, P_INWAIT = 3'd3, P_REPLY = 3'd4;

  gw_core u_core (
    .clk(clk), .rst(rst),
    .in_valid(pst == P_INWAIT), .in_ready(in_ready), .in_data(in_buf),
    .out_valid(out_valid), .out_ready(out_ready), .out_data(out_data));

  // ---- request parser ----
  reg [7:0]     bad_cmd;    // echoed in the error response
  reg           rep_ident;  // pending reply: 1 IDENT, 0 unknown-command error
  reg [IBW-1:0] ibyte;      // byte within the current input value
  reg [NIW-1:0] ielem;      // input value index
  reg [TW-1:0]  tmo;        // clocks since the last byte, mid-frame
  wire          start_reply = !tx_busy && pst == P_REPLY;

  // the current value's bytes, little endian: earlier bytes come from a shift register; the
  // sign-extension bits above IN_BITS are not checked
  /* verilator lint_off UNUSEDSIGNAL */
  wire [IN_BYTES*8-1:0] ival;
  /* verilator lint_on UNUSEDSIGNAL */
  generate
    if (IN_BYTES == 1) begin : g_ival1
      assign ival = rx_data;
    end else begin : g_ivaln
      reg  [(IN_BYTES-1)*8-1:0] iacc;
      assign ival = {rx_data, iacc};
      always @(posedge clk) if (rx_valid && pst == P_PAYLOAD) iacc <= ival[IN_BYTES*8-1:8];
    end
  endgenerate
  // a finished value enters at the top; after N_IN values element k sits at in_buf[k*IN_BITS +: IN_BITS]
  /* verilator lint_off UNUSEDSIGNAL */
  wire [(N_IN+1)*IN_BITS-1:0] icat = {ival[IN_BITS-1:0], in_buf};
  /* verilator lint_on UNUSEDSIGNAL */

  always @(posedge clk) begin
    if (rst) begin
      pst <= P_IDLE;
      tmo <= {TW{1'b0}};
    end else begin
      if (rx_valid || pst == P_IDLE || pst == P_INWAIT || pst == P_REPLY) tmo <= {TW{1'b0}};
      else tmo <= tmo + 1'b1;
      case (pst)
        P_IDLE:
          if (rx_valid && rx_data == REQ_SYNC) pst <= P_CMD;
        P_CMD:
          if (rx_valid) begin
            ibyte <= {IBW{1'b0}};
            ielem <= {NIW{1'b0}};
            if (rx_data == CMD_INFER) begin
              pst <= P_PAYLOAD;
            end else begin
              pst       <= P_REPLY;
              rep_ident <= (rx_data == CMD_IDENT);
              if (rx_data != CMD_IDENT) bad_cmd <= rx_data;
            end
          end else if (tmo == T_LAST) begin
            pst <= P_IDLE;
          end
        P_PAYLOAD:
          if (rx_valid) begin
            if (ibyte == IB_LAST) begin
              ibyte  <= {IBW{1'b0}};
              ielem  <= ielem + 1'b1;
              in_buf <= icat[(N_IN+1)*IN_BITS-1:IN_BITS];
              if (ielem == NI_LAST) pst <= P_INWAIT;
            end else begin
              ibyte <= ibyte + 1'b1;
            end
          end else if (tmo == T_LAST) begin
            pst <= P_IDLE;
          end
        P_INWAIT:
          if (in_ready) pst <= P_IDLE;
        P_REPLY:
          if (start_reply) pst <= P_IDLE;
        default:
          pst <= P_IDLE;
      endcase
    end
  end

  // ---- response sender ----
  // Each response is a byte vector (byte p at [p*8 +: 8]) read straight from the core's out_data and
  // constants; pos walks it. No copy of the output is kept: gw_core holds out_data until out_ready.
  localparam [1:0] K_INFER = 2'd0, K_IDENT = 2'd1, K_ERROR = 2'd2;
  reg  [1:0]    tkind;
  reg  [PW-1:0] pos;                    // byte of the response: 0 sync, 1 cmd, 2 status, 3.. payload
  wire          tx_take = tx_busy && tx_ready;
  wire          last = (tkind == K_INFER) ? (pos == POS_INFER_LAST)
                     : (tkind == K_IDENT) ? (pos == POS_IDENT_LAST) : (pos == POS_ERROR_LAST);
  assign out_ready = tx_take && last && tkind == K_INFER;

  wire [RSP_LEN*8-1:0] infer_rsp;
  assign infer_rsp[23:0] = {ST_OK, CMD_INFER, RSP_SYNC};
  genvar n;
  generate
    // payload bit n: bit I of output value J, sign-extended to OUT_BYTES whole bytes
    for (n = 0; n < N_OUT * OUT_BYTES * 8; n = n + 1) begin : g_obit
      localparam integer J = n / (OUT_BYTES * 8);
      localparam integer I = n % (OUT_BYTES * 8);
      assign infer_rsp[24 + n] = out_data[J * OUT_BITS + ((I < OUT_BITS) ? I : OUT_BITS - 1)];
    end
    if (RSP_LEN > 3 + N_OUT * OUT_BYTES) begin : g_opad
      assign infer_rsp[RSP_LEN*8-1:(3 + N_OUT * OUT_BYTES)*8] = {(RSP_LEN - 3 - N_OUT * OUT_BYTES)*8{1'b0}};
    end
  endgenerate

  /* verilator lint_off UNUSEDSIGNAL */
  wire [RSP_LEN*8-1:0] ident_rsp = {{(RSP_LEN - 3 - IDENT_LEN)*8{1'b0}},
                                    OUT_BITS_W, N_OUT_W, IN_BITS_W, N_IN_W, DESIGN_ID, VERSION,
                                    ST_OK, CMD_IDENT, RSP_SYNC};
  /* verilator lint_on UNUSEDSIGNAL */
  wire [7:0] error_data = (pos == {PW{1'b0}}) ? RSP_SYNC : pos[0] ? bad_cmd : ST_UNKNOWN_CMD;

  // byte pos of the response (a one-hot select: cheaper in LUTs than a shifter)
  reg [7:0] infer_data;
  reg [7:0] ident_data;
  integer q;
  always @(*) begin
    infer_data = 8'd0;
    ident_data = 8'd0;
    for (q = 0; q < RSP_LEN; q = q + 1) begin
      if (pos == q[PW-1:0]) begin
        infer_data = infer_rsp[q*8 +: 8];
        ident_data = ident_rsp[q*8 +: 8];
      end
    end
  end

  assign tx_data = (tkind == K_INFER) ? infer_data : (tkind == K_IDENT) ? ident_data : error_data;

  always @(posedge clk) begin
    if (rst) begin
      tx_busy <= 1'b0;
    end else if (!tx_busy) begin
      pos <= {PW{1'b0}};
      if (pst == P_REPLY) begin
        tx_busy <= 1'b1;
        tkind   <= rep_ident ? K_IDENT : K_ERROR;
      end else if (out_valid) begin
        tx_busy <= 1'b1;
        tkind   <= K_INFER;
      end
    end else if (tx_take) begin
      pos <= pos + 1'b1;
      if (last) tx_busy <= 1'b0;
    end
  end
endmodule

`default_nettype wire
