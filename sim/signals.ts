/**
 * Signal generators for simulated sensors. A signal is evaluated at a point in time; generators
 * with memory (random walk, counter) advance once per call, so a slave that is read once per poll
 * shows a plausible trend.
 */
export type SignalSpec =
  | { readonly kind: 'sine'; readonly amplitude: number; readonly periodMs: number; readonly offset?: number }
  | { readonly kind: 'walk'; readonly start: number; readonly step: number; readonly min: number; readonly max: number }
  | { readonly kind: 'counter'; readonly start?: number; readonly step?: number; readonly wrap?: number }
  | { readonly kind: 'constant'; readonly value: number }
  | { readonly kind: 'toggle'; readonly periodMs: number };

export interface Signal {
  value(now: number): number;
}

export function createSignal(spec: SignalSpec, random: () => number = Math.random): Signal {
  switch (spec.kind) {
    case 'sine': {
      const offset = spec.offset ?? 0;
      return { value: (now) => offset + spec.amplitude * Math.sin((2 * Math.PI * (now % spec.periodMs)) / spec.periodMs) };
    }
    case 'walk': {
      let v = spec.start;
      return {
        value: () => {
          v += (random() * 2 - 1) * spec.step;
          v = Math.min(spec.max, Math.max(spec.min, v));
          return v;
        },
      };
    }
    case 'counter': {
      const step = spec.step ?? 1;
      let v = (spec.start ?? 0) - step;
      return {
        value: () => {
          v += step;
          if (spec.wrap !== undefined && v >= spec.wrap) v = 0;
          return v;
        },
      };
    }
    case 'constant':
      return { value: () => spec.value };
    case 'toggle':
      return { value: (now) => (Math.floor(now / spec.periodMs) % 2 === 0 ? 0 : 1) };
  }
}
