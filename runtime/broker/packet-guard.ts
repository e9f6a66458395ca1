import { Duplex } from 'node:stream';

/**
 * Sits between a device's socket and the MQTT parser and reads each packet's fixed header
 * (MQTT 3.1.1 §2.2): a packet announcing more than `maxBytes` is refused before its body is read,
 * so a 120 MiB PUBLISH costs the gateway a few bytes of header, not 120 MiB of buffer and a JSON
 * parse. The refusal closes the connection (MQTT 3.1.1 has no reason code for it; MQTT 5's 0x95
 * "Packet too large" is the same decision). Bytes pass through unchanged and uncopied; the
 * socket's flow control is kept (the socket pauses while the parser is behind).
 */
export class PacketGuard extends Duplex {
  /** Bytes of the current packet still to pass (its body), or -1 while a fixed header is read. */
  private remaining = -1;
  /** The fixed header read so far (at most 5 bytes: type and up to 4 length bytes). */
  private header: number[] = [];

  constructor(
    readonly socket: Duplex,
    private readonly maxBytes: number,
    private readonly onTooLarge: (announced: number) => void,
    private readonly onMalformed: () => void,
  ) {
    super({ allowHalfOpen: false });
    socket.on('data', (chunk: Buffer) => {
      if (!this.scan(chunk)) return;
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  /** Walks the packet boundaries in `chunk`; false (and the connection closed) when one is refused. */
  private scan(chunk: Buffer): boolean {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - i);
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.remaining = -1;
        continue;
      }
      this.header.push(chunk[i] ?? 0);
      i++;
      if (this.header.length === 1) continue;
      // Remaining Length: up to 4 bytes, 7 bits each, high bit = more [MQTT-2.2.3].
      const last = this.header[this.header.length - 1] ?? 0;
      if (last & 0x80) {
        if (this.header.length === 5) return this.refuse(() => this.onMalformed());
        continue;
      }
      let length = 0;
      for (let k = this.header.length - 1; k >= 1; k--) length = length * 128 + ((this.header[k] ?? 0) & 0x7f);
      const total = length + this.header.length;
      this.header = [];
      if (total > this.maxBytes) return this.refuse(() => this.onTooLarge(total));
      this.remaining = length === 0 ? -1 : length;
    }
    return true;
  }

  private refuse(report: () => void): boolean {
    report();
    this.socket.destroy();
    this.destroy();
    return false;
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.destroyed) {
      callback();
      return;
    }
    this.socket.write(chunk, encoding, callback);
  }

  /**
   * What aedes wrote while the socket was busy (PUBACKs of a batch, deliveries), as one write: on
   * TLS each socket write is a record of its own, so a PUBACK per record costs more than the
   * message it acknowledges.
   */
  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    if (this.socket.destroyed) {
      callback();
      return;
    }
    this.socket.write(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }
}
