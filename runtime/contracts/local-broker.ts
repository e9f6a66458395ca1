/** A PUBLISH received by the gateway's local broker from a child device. */
export interface InboundPublish {
  /**
   * The publisher's client id, which the embedded broker authenticated; undefined when the broker
   * cannot tell (an external site broker: MQTT does not carry the publisher, its ACLs answer for it).
   */
  readonly clientId: string | undefined;
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1 | 2;
}

/**
 * The local broker as drivers see it. An interceptor runs before the broker acknowledges a
 * PUBLISH: the PUBACK waits for its promise, so an interceptor that commits the data first gives
 * the device an end-to-end guarantee. A rejected promise means "not stored": the broker drops the
 * connection without acknowledging, and the device sends the message again. With an external site
 * broker the PUBACK the interceptor holds back is the gateway's to the site broker, which keeps the
 * message in the gateway's session and delivers it again.
 */
export interface LocalBroker {
  intercept(handler: (msg: InboundPublish) => Promise<void>): void;
  /**
   * Called for every message the broker delivers, after it was accepted: including last wills,
   * which no client publishes itself and which no interceptor sees.
   */
  observe(handler: (msg: { readonly topic: string; readonly payload: Buffer; readonly retain: boolean }) => void): void;
}
