import neostandard from 'neostandard'

export default neostandard({
  ts: true,
  ignores: ['dist/**', 'example-app/dist/**', 'coverage/**', '.tap/**', '**/.data/**', 'bench/results/**']
})
