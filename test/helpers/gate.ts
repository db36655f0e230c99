// A promise the test opens by hand: routes wait on it so a test can act (disconnect, kill the
// backend, close the app) at an exact point of the request, without sleeping.

export interface Gate<T = void> {
  promise: Promise<T>
  open (value: T): void
}

export function gate<T = void> (): Gate<T> {
  let open!: (value: T) => void
  const promise = new Promise<T>((resolve) => { open = resolve })
  return { promise, open }
}
